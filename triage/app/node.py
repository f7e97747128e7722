"""The running node: receiver, completion watcher, triage worker and delivery, together.

The triage worker claims the next study quiet for ``TRIAGE_QUIET_SECONDS``, with every
instance its senders announced (TRIAGE_COMPLETE_ON_ANNOUNCED_COUNT), or whose previous
worker's lease expired, from the catalogue, one at a time (that keeps the device's memory
bounded), and renews its lease while the study runs; nodes and workers sharing a catalogue
share its studies this way (`triage.catalogue.claims`). Studies known complete (pull mode) are
claimed at once. Delivery retries run on their own schedule. ``stop()`` finishes the study in
hand and returns.

`start_node` is the one place that wires a node as `triage serve` runs it: the services, the
Prefect flows, pull mode when it is configured. The demo, the benchmarks and the tests start
their nodes through it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING

from triage.app.prefect_api import EmbeddedPrefectAPI, check_prefect_server
from triage.app.services import Services, serve_in_this_process
from triage.catalogue import Catalogue
from triage.config import Settings
from triage.deliver.outbox import deliver_due
from triage.errors import StorageError
from triage.receive.receiver import Receiver
from triage.receive.tls import sender_context
from triage.results import Priority, StudyState

if TYPE_CHECKING:
    from triage.worklist.server import WebServer

log = logging.getLogger(__name__)

FINISHED = (StudyState.TRIAGED, StudyState.NOT_ANALYSED)

StudyRunner = Callable[[str, int], object]
DeliveryRunner = Callable[[], object]


class NodeRole(StrEnum):
    """What one process of a deployment does (`triage serve --role`)."""

    #: everything in one process: the embedded node
    ALL = "all"
    #: receive, completion, hand-off (the shared catalogue), pull, delivery; no models
    RECEIVER = "receiver"
    #: triage: claims complete studies from the shared catalogue and runs the models
    WORKER = "worker"


class TriageNode:
    def __init__(
        self,
        svc: Services,
        run_study: StudyRunner,
        run_delivery: DeliveryRunner | None = None,
        poll_seconds: float = 0.5,
        warm_up: Callable[[], object] | None = None,
        run_pull: Callable[[], object] | None = None,
        role: NodeRole = NodeRole.ALL,
    ) -> None:
        self.svc = svc
        self.role = role
        self.run_pull = run_pull  # pull mode: one poll of the PACS every TRIAGE_PULL_INTERVAL
        self.run_study = run_study
        self.run_delivery = run_delivery or (
            lambda: deliver_due(svc.store, svc.catalogue, svc.settings)
        )
        self.poll_seconds = poll_seconds
        self.warm_up = warm_up
        self._warmed = threading.Event()
        if warm_up is None:
            self._warmed.set()
        self.receiver = (
            None
            if role is NodeRole.WORKER
            else Receiver.from_settings(svc.store, svc.catalogue, svc.settings)
        )
        sender_context(svc.settings)  # a TLS setting that cannot work stops start-up, not delivery
        self._stop = threading.Event()
        self._queue: queue.Queue[tuple[str, int]] = queue.Queue()
        self._threads: list[threading.Thread] = []
        #: run after the loops have stopped (start_node closes the services there)
        self.after_stop: list[Callable[[], object]] = []
        #: the web app, when this node serves it (`start_node(web=True)`)
        self.web: WebServer | None = None

    def start(self) -> None:
        released = self.svc.catalogue.release_dead_leases()
        if released:
            log.warning(
                "%d study(ies) interrupted by a restart will be triaged again (their worker, "
                "a process of this machine, is gone)",
                len(released),
            )
        if self.receiver is not None:
            self.receiver.start(self.svc.settings.host, self.svc.settings.port)
        if self.warm_up is not None:  # e.g. start Prefect's embedded API before the first study
            # not joined on stop: a warm-up in progress must not delay a SIGTERM
            threading.Thread(target=self._warm_up, name="triage-warm-up", daemon=True).start()
        loops = []
        if self.role is not NodeRole.RECEIVER:
            loops.append(("triage", self._work))
        if self.role is not NodeRole.WORKER:
            loops.append(("delivery", self._deliver))
        if self.run_pull is not None and self.svc.settings.pull_interval:
            loops.append(("pull", self._pull))
        for name, target in loops:
            thread = threading.Thread(target=target, name=f"triage-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    @property
    def port(self) -> int:
        """The receiver's port (0 for a worker, which receives nothing)."""
        return 0 if self.receiver is None else self.receiver.port

    def stop(self, timeout: float = 60) -> None:
        if self.receiver is not None:
            self.receiver.stop()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        while self.after_stop:
            self.after_stop.pop()()

    def triage_now(self, study_uid: str) -> None:
        """A study known to be complete (all the instances the PACS reported are here): triage
        it without waiting for the quiet period. A receiver without a worker of its own leaves
        it to the workers, after the quiet period."""
        if self.role is NodeRole.RECEIVER:
            return
        settings = self.svc.settings
        generation = self.svc.catalogue.claim_for_triage(
            study_uid, worker=settings.worker, lease_seconds=settings.lease_seconds
        )
        if generation is not None:
            self._queue.put((study_uid, generation))

    def _pull(self) -> None:
        assert self.run_pull is not None and self.svc.settings.pull_interval
        if not self._wait_for_warm_up():
            return
        while not self._stop.is_set():
            try:
                self.run_pull()
            except Exception as exc:  # the PACS down, a query refused: try again next interval
                interval = self.svc.settings.pull_interval
                log.warning("pull from the PACS failed; next try in %.0f s: %s", interval, exc)
            self._stop.wait(self.svc.settings.pull_interval)

    def _warm_up(self) -> None:
        assert self.warm_up is not None
        try:
            self.warm_up()
        except Exception:
            log.exception("warm-up failed; the first study will pay the start-up cost")
        finally:
            self._warmed.set()

    def _work(self) -> None:
        if not self._wait_for_warm_up():
            return
        settings = self.svc.settings
        while not self._stop.is_set():
            try:
                claim = self._next_claim()
            except StorageError as exc:  # the catalogue unreachable: try again, the node goes on
                log.warning("cannot claim the next study; retrying: %s", exc)
                claim = None
            except Exception:
                log.exception("cannot claim the next study; retrying")
                claim = None
            if claim is None:
                self._stop.wait(self.poll_seconds)
                continue
            study_uid, generation = claim
            try:
                t0 = time.perf_counter()
                with Heartbeat(self.svc.catalogue, study_uid, generation, settings):
                    self.run_study(study_uid, generation)
            except Exception as exc:  # fail safe: the study shows as not analysed, others go on
                log.exception("triage run failed")
                self._record_failed_run(study_uid, generation, exc)
                continue
            try:  # the whole run as the worker saw it: the flow's work and Prefect's share
                self.svc.catalogue.add_timings(study_uid, {"run_s": time.perf_counter() - t0})
            except StorageError as exc:
                log.warning("study %s: its run time was not recorded: %s", study_uid, exc)

    def _next_claim(self) -> tuple[str, int] | None:
        """A study handed over as complete (pull mode), else the next one quiet in the
        catalogue (or left by a worker whose lease expired)."""
        settings = self.svc.settings
        catalogue = self.svc.catalogue
        while True:
            try:
                study_uid, generation = self._queue.get_nowait()
            except queue.Empty:
                break
            # claimed when it was handed over: still this worker's?
            if catalogue.renew_lease(
                study_uid, generation, settings.worker, settings.lease_seconds
            ):
                return study_uid, generation
        claim = catalogue.claim_next(
            settings.worker,
            settings.quiet_seconds,
            settings.lease_seconds,
            on_announced_count=settings.complete_on_announced_count,
        )
        return None if claim is None else (claim.study_instance_uid, claim.generation)

    def _record_failed_run(self, study_uid: str, generation: int, exc: Exception) -> None:
        """Mark the study not analysed. While the catalogue cannot take the write (locked, full)
        it is tried again: the study must not stay in triaging, nor this worker die with it. A
        stop in the meantime leaves it in triaging, and the next start triages it again."""
        reason = (
            f"internal error during triage ({type(exc).__name__}); see the node's log, "
            "then run `triage rerun`"
        )
        while True:
            try:
                self.svc.catalogue.finish_triage(
                    study_uid, generation, [], Priority.NOT_ANALYSED, reason
                )
                return
            except StorageError:
                log.exception("cannot record the failed triage run yet; retrying")
            if self._stop.wait(max(self.poll_seconds, 1.0)):
                return

    def _wait_for_warm_up(self) -> bool:
        """False when the node stops first. Two flow runs starting Prefect's embedded API at
        once make one of them fail, so no flow runs before the warm-up is over."""
        while not self._warmed.wait(self.poll_seconds):
            if self._stop.is_set():
                return False
        return True

    def _deliver(self) -> None:
        if not self._wait_for_warm_up():
            return
        while not self._stop.is_set():
            try:
                if self.svc.catalogue.due_deliveries(limit=1):
                    self.run_delivery()
            except StorageError as exc:  # the catalogue or the store away for now
                log.warning("delivery run failed; retrying: %s", exc)
            except Exception:
                log.exception("delivery run failed; retrying")
            self._stop.wait(max(self.poll_seconds, 1.0))


class Heartbeat:
    """Renews a worker's lease on a study every third of TRIAGE_LEASE_SECONDS while the block
    runs. A lease found lost (taken over, or new images) is logged: the run goes on, and its
    result is refused when it finishes (the catalogue fences it by generation)."""

    def __init__(self, catalogue: Catalogue, study_uid: str, generation: int, settings: Settings):
        self.catalogue, self.study_uid, self.generation = catalogue, study_uid, generation
        self.worker, self.lease_seconds = settings.worker, settings.lease_seconds
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="triage-lease", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join(10)

    def _beat(self) -> None:
        while not self._done.wait(self.lease_seconds / 3):
            try:
                held = self.catalogue.renew_lease(
                    self.study_uid, self.generation, self.worker, self.lease_seconds
                )
            except Exception as exc:  # the catalogue unreachable for now: next beat
                log.warning("cannot renew the lease on study %s: %s", self.study_uid, exc)
                continue
            if not held:
                state = self.catalogue.study_state(self.study_uid)
                if state is not None and state[1] == self.generation and state[0] in FINISHED:
                    return  # recorded (the shadow models may still be running): nothing to hold
                log.warning(
                    "study %s is no longer this worker's (new images, or taken over): its "
                    "result from this run will not be recorded",
                    self.study_uid,
                )
                return


def start_node(
    settings: Settings,
    *,
    poll_seconds: float = 0.5,
    warm_up: bool = True,
    role: NodeRole = NodeRole.ALL,
    web: bool = False,
) -> TriageNode:
    """Open the services, wire the Prefect flows (triage, delivery, and pull when
    TRIAGE_PULL_INTERVAL is set) and start the node. ``warm_up`` starts Prefect's API before
    the first study (False where it already runs, e.g. a test harness). ``role``: the whole
    node, or its receiver or worker part (`NodeRole`). ``web``: also the web app on
    TRIAGE_WEB_PORT (unless it is off), as `triage serve` does for the whole node and the
    receiver. ``node.stop()`` also closes the services."""
    from triage.app.runtime import configure_prefect, without_flow_heartbeat

    configure_prefect(settings)  # before prefect is imported
    api = None
    if warm_up and not os.environ.get("PREFECT_API_URL"):  # also before prefect is imported
        api = EmbeddedPrefectAPI(settings.home / "prefect")  # dies with the node (SIGKILL too)
        api.start()
        os.environ["PREFECT_API_URL"] = api.url
    elif warm_up:
        check_prefect_server(os.environ["PREFECT_API_URL"])
    from flows.triage import deliver_outbox, triage_study
    from flows.triage import warm_up as warm_up_flow

    def warm_up_prefect() -> None:
        if api is not None:
            api.wait_ready()
        without_flow_heartbeat(warm_up_flow)()

    svc = Services.open(settings, models=role is not NodeRole.RECEIVER)
    node = TriageNode(
        svc,
        run_study=without_flow_heartbeat(triage_study),
        run_delivery=without_flow_heartbeat(deliver_outbox),
        poll_seconds=poll_seconds,
        warm_up=warm_up_prefect if warm_up else None,
        role=role,
    )
    if api is not None:
        node.after_stop += [api.stop, lambda: os.environ.pop("PREFECT_API_URL", None)]
    if settings.pull_interval and node.receiver is not None:
        from flows.pull import pull_new_studies
        from triage.receive.pull import puller_for

        svc.puller = puller_for(
            settings, svc.store, svc.catalogue, node.receiver, on_complete=node.triage_now
        )
        node.run_pull = without_flow_heartbeat(pull_new_studies)
    serve_in_this_process(svc)
    node.after_stop += [svc.close, lambda: serve_in_this_process(None)]
    try:
        node.start()
        if web and settings.web_port is not None:
            from triage.app.web_app import start_web

            node.web = start_web(settings, svc.catalogue, svc.store)
            node.after_stop.append(node.web.stop)
    except BaseException:
        node.stop()
        raise
    return node
