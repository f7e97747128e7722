"""The running node: receiver, completion watcher, triage worker and delivery, together.

The watcher finds studies quiet for ``TRIAGE_QUIET_SECONDS``, claims each one and hands it to a
single triage worker (one study at a time keeps the device's memory bounded). Delivery retries
run on their own schedule. ``stop()`` finishes the study in hand and returns.

`start_node` is the one place that wires a node as `triage serve` runs it: the services, the
Prefect flows, pull mode when it is configured. The demo, the benchmarks and the tests start
their nodes through it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from triage.app.services import Services, serve_in_this_process
from triage.catalogue import utcnow
from triage.config import Settings
from triage.deliver.outbox import deliver_due
from triage.errors import StorageError
from triage.receive.receiver import Receiver
from triage.receive.tls import sender_context
from triage.results import Priority

log = logging.getLogger(__name__)

StudyRunner = Callable[[str, int], object]
DeliveryRunner = Callable[[], object]


class TriageNode:
    def __init__(
        self,
        svc: Services,
        run_study: StudyRunner,
        run_delivery: DeliveryRunner | None = None,
        poll_seconds: float = 0.5,
        warm_up: Callable[[], object] | None = None,
        run_pull: Callable[[], object] | None = None,
    ) -> None:
        self.svc = svc
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
        self.receiver = Receiver.from_settings(svc.store, svc.catalogue, svc.settings)
        sender_context(svc.settings)  # a TLS setting that cannot work stops start-up, not delivery
        self._stop = threading.Event()
        self._queue: queue.Queue[tuple[str, int]] = queue.Queue()
        self._threads: list[threading.Thread] = []
        #: run after the loops have stopped (start_node closes the services there)
        self.after_stop: list[Callable[[], object]] = []

    def start(self) -> None:
        requeued = self.svc.catalogue.requeue_interrupted()
        if requeued:
            log.warning(
                "%d study(ies) interrupted by a restart will be triaged again", len(requeued)
            )
        self.receiver.start(self.svc.settings.host, self.svc.settings.port)
        if self.warm_up is not None:  # e.g. start Prefect's embedded API before the first study
            # not joined on stop: a warm-up in progress must not delay a SIGTERM
            threading.Thread(target=self._warm_up, name="triage-warm-up", daemon=True).start()
        loops = [("watcher", self._watch), ("triage", self._work), ("delivery", self._deliver)]
        if self.run_pull is not None and self.svc.settings.pull_interval:
            loops.append(("pull", self._pull))
        for name, target in loops:
            thread = threading.Thread(target=target, name=f"triage-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    @property
    def port(self) -> int:
        return self.receiver.port

    def stop(self, timeout: float = 60) -> None:
        self.receiver.stop()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        while self.after_stop:
            self.after_stop.pop()()

    def _watch(self) -> None:
        quiet = self.svc.settings.quiet_seconds
        while not self._stop.is_set():
            try:
                for study_uid in self.svc.catalogue.quiet_studies(quiet, utcnow()):
                    generation = self.svc.catalogue.claim_for_triage(study_uid, quiet)
                    if generation is not None:
                        self._queue.put((study_uid, generation))
            except Exception:
                log.exception("completion watcher failed; retrying")
            self._stop.wait(self.poll_seconds)

    def triage_now(self, study_uid: str) -> None:
        """A study known to be complete (all the instances the PACS reported are here): triage
        it without waiting for the quiet period."""
        generation = self.svc.catalogue.claim_for_triage(study_uid)
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
        while not self._stop.is_set():
            try:
                study_uid, generation = self._queue.get(timeout=self.poll_seconds)
            except queue.Empty:
                continue
            try:
                self.run_study(study_uid, generation)
            except Exception as exc:  # fail safe: the study shows as not analysed, others go on
                log.exception("triage run failed")
                self._record_failed_run(study_uid, generation, exc)
            finally:
                self._queue.task_done()

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
            except Exception:
                log.exception("delivery run failed; retrying")
            self._stop.wait(max(self.poll_seconds, 1.0))


def start_node(
    settings: Settings, *, poll_seconds: float = 0.5, warm_up: bool = True
) -> TriageNode:
    """Open the services, wire the Prefect flows (triage, delivery, and pull when
    TRIAGE_PULL_INTERVAL is set) and start the node. ``warm_up`` starts Prefect's API before
    the first study (False where it already runs, e.g. a test harness). ``node.stop()`` also
    closes the services."""
    from triage.app.runtime import configure_prefect

    configure_prefect(settings)  # before prefect is imported
    from flows.triage import deliver_outbox, triage_study
    from flows.triage import warm_up as warm_up_flow

    svc = Services.open(settings)
    node = TriageNode(
        svc,
        run_study=triage_study,
        run_delivery=deliver_outbox,
        poll_seconds=poll_seconds,
        warm_up=warm_up_flow if warm_up else None,
    )
    if settings.pull_interval:
        from flows.pull import pull_new_studies
        from triage.receive.pull import puller_for

        svc.puller = puller_for(
            settings, svc.store, svc.catalogue, node.receiver, on_complete=node.triage_now
        )
        node.run_pull = pull_new_studies
    serve_in_this_process(svc)
    node.after_stop += [svc.close, lambda: serve_in_this_process(None)]
    try:
        node.start()
    except BaseException:
        node.stop()
        raise
    return node
