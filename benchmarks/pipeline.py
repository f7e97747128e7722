"""Pipeline benchmark: receive rate against peers, and end-to-end latency of the whole node.

    .venv/bin/python benchmarks/pipeline.py [--studies 5] [--slices 200] [--size 512] [--quiet 5]
                                            [--repeats 3] [--models DIR] [--out FILE.json]

One run does three things on synthetic head-CT studies (``--studies`` studies, each a scout plus
an axial series of ``--slices`` slices of ``--size`` x ``--size`` int16 pixels, 0.45 mm pixels,
0.8 mm slice step at the defaults):

1. Receive rate. All instances of all studies go over ONE ``storescu`` association to each of
   (a) dcmtk ``storescp`` (writes files, no fsync), (b) Orthanc (fsync, SQLite index) and
   (c) this project's receiver (``triage.receive.receiver.Receiver``: fsynced object store plus
   the SQLite catalogue), receive only; plus (d) a diagnostic: the same pynetdicom SCP storing
   nothing. Each is measured ``--repeats`` times, interleaved in rotating order, and the median
   is reported. ``TCP_NODELAY=1`` is set for dcmtk and Orthanc.
2. End-to-end latency. The full node (``triage.app.node.start_node``: receiver, quiet-period
   watcher,
   Prefect triage flow, delivery) runs with Orthanc as its PACS. After a warm-up study (Prefect's
   embedded API starts on the first flow run) two passes run, each on its own studies, one
   association per study: ``isolated`` (the next study is sent once the previous SR arrived) and
   ``back_to_back`` (the same studies as step 1, sent one after the other without waiting).
   Latency = the SR is found in Orthanc (``/tools/find``, polled every 0.1 s) minus the moment
   ``storescu`` exited (last instance acknowledged). Stages are timed by wrapping, in this
   process only, the library functions the node and the flow call, and read back from
   ``catalogue.study_timings()``.
3. Prints the tables and writes everything to ``--out`` (JSON; default benchmarks/results/).

Studies are cached under ``$TMPDIR/triage-bench-cache/<parameters>/`` between runs. The phantom is
generated at half resolution with ``triage.synthetic.phantom.head_phantom`` (same field of
view), upsampled
trilinearly with torch and given fresh noise at full resolution: a full-resolution 512x512x200
``head_phantom`` takes ~14 s; this way a whole study, files included, takes 2-4 s.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support.orthanc import Orthanc, free_port  # noqa: E402  (tests/support/orthanc.py)

CACHE_VERSION = "v2"
SCU_AE = "BENCH_SCU"
TRIAGE_AE = "TRIAGE"
STORESCP_AE = "STORESCP"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
TRIAGE_STEP_MS: list[dict[str, float]] = []  # per receive run: ms per instance in each step


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- synthetic studies ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StudyFiles:
    folder: Path
    study_instance_uid: str
    accession_number: str
    lesion: bool
    instances: int
    bytes: int


def _uid(*parts: str) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["triage-benchmark", *parts]))


def _phantom_hu(
    seed: int, shape: tuple[int, int, int], spacing: tuple[float, float, float], lesion: bool
) -> np.ndarray:
    """A head phantom on the full grid, built at half resolution and upsampled (same FOV)."""
    import torch

    from triage.synthetic.phantom import head_phantom

    rng = np.random.default_rng(seed)
    coarse = tuple(max(16, n // 2) for n in shape)
    coarse_spacing = tuple(s * n / c for s, n, c in zip(spacing, shape, coarse, strict=True))
    phantom = head_phantom(
        rng,
        coarse,  # type: ignore[arg-type]
        coarse_spacing,  # type: ignore[arg-type]
        lesion,
        lesion_radius_mm=float(rng.uniform(8, 15)) if lesion else None,
        noise_sigma_hu=0.0,
    )
    hu = torch.nn.functional.interpolate(
        torch.from_numpy(phantom.hu)[None, None], size=shape, mode="trilinear", align_corners=False
    )[0, 0].numpy()
    hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(rng.uniform(2.0, 8.0))
    return hu


def write_study(
    folder: Path,
    index: int,
    key: str,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    seed: int,
) -> StudyFiles:
    from triage.synthetic.series import write_study

    lesion = index % 2 == 0
    hu = _phantom_hu(seed + index, shape, spacing, lesion)
    study_uid = _uid(key, "study", str(index))
    accession = f"S{seed}-{index + 1:03d}"
    common: dict[str, str] = dict(
        study_instance_uid=study_uid,
        patient_id=f"BENCH-{index + 1:03d}",
        patient_name=f"Bench^Patient{index + 1:03d}",
        accession_number=accession,
        study_description="CT HEAD WITHOUT CONTRAST",
        study_date="20250101",
        study_time="120000",
    )
    paths = write_study(
        folder,
        hu,
        spacing,
        scout_series_uid=_uid(key, "scout", str(index)),
        series_instance_uid=_uid(key, "axial", str(index)),
        series_description="Head 0.8mm",
        **common,
    )
    return StudyFiles(
        folder, study_uid, accession, lesion, len(paths), sum(p.stat().st_size for p in paths)
    )


def studies_cached(
    count: int, slices: int, size: int, pixel: float, step: float, seed: int
) -> tuple[list[StudyFiles], Path, bool]:
    """The benchmark studies, generated once per parameter set under $TMPDIR."""
    key = f"{CACHE_VERSION}-n{count}-z{slices}-xy{size}-px{pixel:g}-dz{step:g}-seed{seed}"
    cache = Path(tempfile.gettempdir()) / "triage-bench-cache" / key
    manifest = cache / "manifest.json"
    if manifest.is_file():
        rows = json.loads(manifest.read_text())
        studies = [StudyFiles(**{**r, "folder": cache / r["folder"]}) for r in rows]
        if all(s.folder.is_dir() for s in studies):
            return studies, cache, True
    partial = cache.with_name(cache.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    studies = []
    for i in range(count):
        t0 = time.perf_counter()
        s = write_study(
            partial / f"study{i + 1:03d}", i, key, (size, size, slices), (pixel, pixel, step), seed
        )
        studies.append(s)
        log(
            f"generated study {i + 1}/{count}: {s.instances} instances, "
            f"{s.bytes / 1e6:.0f} MB, {time.perf_counter() - t0:.1f} s"
        )
    rows = [{**dataclasses.asdict(s), "folder": s.folder.name} for s in studies]
    (partial / "manifest.json").write_text(json.dumps(rows, indent=1))
    shutil.rmtree(cache, ignore_errors=True)
    partial.rename(cache)
    return [dataclasses.replace(s, folder=cache / s.folder.name) for s in studies], cache, False


def warmup_study(root: Path) -> StudyFiles:
    """A small analysable study with fresh UIDs (starts Prefect and loads the model)."""
    from triage.app.demo import write_demo_studies

    demo = write_demo_studies(root, 1, seed=3, shape=(128, 128, 24), unanalysable=0)[0]
    files = [p for p in demo.folder.iterdir() if p.is_file()]
    return StudyFiles(
        demo.folder,
        demo.study_instance_uid,
        demo.accession_number,
        demo.lesion,
        len(files),
        sum(p.stat().st_size for p in files),
    )


# -- sending and peers ---------------------------------------------------------------------------


def storescu(called_ae: str, port: int, folders: list[Path]) -> float:
    """Send every file of the folders over one association; returns the wall time in seconds."""
    cmd = [
        "storescu",
        "-aet",
        SCU_AE,
        "-aec",
        called_ae,
        "+sd",
        "127.0.0.1",
        str(port),
        *map(str, folders),
    ]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=DCMTK_ENV, capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"storescu to {called_ae} failed ({done.returncode}): {done.stderr}")
    return elapsed


def wait_for_echo(ae: str, port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ok = subprocess.run(
            ["echoscu", "-aet", SCU_AE, "-aec", ae, "127.0.0.1", str(port)],
            env=DCMTK_ENV,
            capture_output=True,
        )
        if ok.returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{ae} on port {port} did not answer C-ECHO within {timeout} s")


@contextlib.contextmanager
def storescp_peer(work: Path, max_pdu: int) -> Iterator[tuple[str, int, Callable[[], int]]]:
    out = work / "out"
    out.mkdir(parents=True)
    port = free_port()
    cmd = ["storescp", "-q", "-aet", STORESCP_AE, "-pdu", str(max_pdu), "-od", str(out), str(port)]
    proc = subprocess.Popen(cmd, env=DCMTK_ENV)
    try:
        wait_for_echo(STORESCP_AE, port)
        yield STORESCP_AE, port, lambda: sum(1 for p in out.iterdir() if p.is_file())
    finally:
        proc.terminate()
        proc.wait(15)


@contextlib.contextmanager
def orthanc_peer(work: Path) -> Iterator[tuple[str, int, Callable[[], int]]]:
    pacs = Orthanc(work)
    pacs.start()
    try:
        yield pacs.ae_title, pacs.dicom_port, lambda: int(pacs.get("/statistics")["CountInstances"])
    finally:
        pacs.stop()


@contextlib.contextmanager
def triage_peer(work: Path) -> Iterator[tuple[str, int, Callable[[], int]]]:
    """The project's receiver, with benchmark-side timers around its per-instance steps."""
    from triage.catalogue import Catalogue
    from triage.receive.receiver import Receiver
    from triage.store import LocalStore

    work.mkdir(parents=True)
    catalogue = Catalogue(f"sqlite:///{work / 'catalogue.db'}")
    store = LocalStore(work / "store")
    receiver = Receiver(store, catalogue, TRIAGE_AE)
    spent: dict[str, float] = {}
    lock = threading.Lock()

    def timed(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with lock:
                    spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0

        return wrapper

    # the receiver writes in two steps (triage.receive.commit): the file fsynced, then the batch
    # moved in place with one folder fsync and catalogued in one transaction
    store.stage = timed(store.stage, "store_stage")  # type: ignore[method-assign]
    store.publish = timed(store.publish, "store_publish")  # type: ignore[method-assign]
    catalogue.record_instances = timed(catalogue.record_instances, "record_instances")  # type: ignore[method-assign]
    receiver.handle_store = timed(receiver.handle_store, "handler")  # type: ignore[method-assign]
    receiver.start("127.0.0.1", 0)
    try:
        yield TRIAGE_AE, receiver.port, lambda: receiver.stats.stored
    finally:
        receiver.stop()
        catalogue.close()
        n = max(1, receiver.stats.stored)
        TRIAGE_STEP_MS.append({k: v / n * 1000 for k, v in spent.items()})


@contextlib.contextmanager
def peer_ready(
    peer: Callable[[Path], contextlib.AbstractContextManager[Any]], work: Path
) -> Iterator[tuple[str, int, Callable[[], int]]]:
    """Start a peer on a quiet disk: earlier runs' dirty pages are written back first."""
    with peer(work) as endpoint:
        os.sync()
        time.sleep(1.0)
        yield endpoint


@contextlib.contextmanager
def pynetdicom_peer(work: Path) -> Iterator[tuple[str, int, Callable[[], int]]]:
    """Diagnostic: the same pynetdicom SCP set-up as the receiver (AE and reactors), decoding
    each data set and answering success without storing anything: the ceiling of the network
    layer alone."""
    from pynetdicom import evt

    from triage.receive.network import start_server
    from triage.receive.receiver import Receiver

    count = [0]
    lock = threading.Lock()

    def handle(event: Any) -> int:
        _ = event.dataset
        with lock:
            count[0] += 1
        return 0x0000

    ae = Receiver(None, None, TRIAGE_AE).application_entity()  # type: ignore[arg-type]
    server = start_server(
        ae, ("127.0.0.1", 0), ssl_context=None, evt_handlers=[(evt.EVT_C_STORE, handle)]
    )
    try:
        yield TRIAGE_AE, int(server.server_address[1]), lambda: count[0]
    finally:
        server.shutdown()


def measure_receive(
    studies: list[StudyFiles], repeats: int, scratch: Path, storescp_pdu: int
) -> dict[str, Any]:
    folders = [s.folder for s in studies]
    instances = sum(s.instances for s in studies)
    nbytes = sum(s.bytes for s in studies)
    for folder in folders:  # into the page cache: every peer reads the same warm files
        for path in folder.iterdir():
            path.read_bytes()
    peers: dict[str, Callable[[Path], contextlib.AbstractContextManager[Any]]] = {
        "storescp": lambda w: storescp_peer(w, storescp_pdu),
        "orthanc": orthanc_peer,
        "triage": triage_peer,
        "pynetdicom-nostore": pynetdicom_peer,
    }
    runs: dict[str, list[float]] = {name: [] for name in peers}
    names = list(peers)
    for rep in range(repeats):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:  # rotate the order
            work = scratch / f"{name}-{rep}"
            with peer_ready(peers[name], work) as (ae, port, received):
                seconds = storescu(ae, port, folders)
                got = received()
            if got != instances:
                raise RuntimeError(f"{name} stored {got} of {instances} instances")
            runs[name].append(seconds)
            log(
                f"receive {name:8} run {rep + 1}/{repeats}: {seconds:6.2f} s, "
                f"{instances / seconds:6.1f} inst/s, {nbytes / 1e6 / seconds:6.1f} MB/s"
            )
    # Deleted only now: on this ext4 (mounted with `discard`) deleting hundreds of MB issues
    # discards that slow the fsyncs of whichever receiver runs next.
    shutil.rmtree(scratch, ignore_errors=True)
    os.sync()
    result: dict[str, Any] = {"instances": instances, "bytes": nbytes, "peers": {}}
    for name, times in runs.items():
        med = statistics.median(times)
        result["peers"][name] = {
            "runs_s": times,
            "median_s": med,
            "instances_per_s": instances / med,
            "mb_per_s": nbytes / 1e6 / med,
        }
    steps = sorted({k for run in TRIAGE_STEP_MS for k in run})
    result["triage_steps_ms_per_instance"] = {
        k: statistics.median(run.get(k, 0.0) for run in TRIAGE_STEP_MS) for k in steps
    }
    rate = {name: p["instances_per_s"] for name, p in result["peers"].items()}
    result["ratio_triage_orthanc"] = rate["triage"] / rate["orthanc"]
    result["ratio_triage_storescp"] = rate["triage"] / rate["storescp"]
    result["goal_triage_orthanc"] = 1.5
    result["goal_triage_storescp"] = 0.5
    return result


# -- end-to-end latency --------------------------------------------------------------------------


class Probe:
    """Timestamps (time.perf_counter) of the node's steps, per study, from wrapped functions."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: dict[str, dict[str, Any]] = {}

    def record(self, study_uid: str, name: str, value: Any) -> None:
        with self.lock:
            row = self.events.setdefault(study_uid, {})
            if isinstance(value, tuple):  # (start, end): durations add up over repeated calls
                row.setdefault(name + "_start", value[0])
                row[name + "_end"] = value[1]
                row[name + "_s"] = row.get(name + "_s", 0.0) + value[1] - value[0]
            else:
                row.setdefault(name, value)

    def wrap(self, fn: Callable[..., Any], name: str, uid_of: Callable[..., str | None]) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                uid = uid_of(*args, **kwargs)
                if uid:
                    self.record(uid, name, (t0, time.perf_counter()))

        return wrapper


def instrument(node: Any, svc: Any, probe: Probe) -> None:
    """Benchmark-side timers around the calls the node and the flow make (library unchanged)."""
    import flows.triage as flow_module
    from triage.app import pipeline

    def second(*args: Any, **kwargs: Any) -> str:
        return str(args[1])

    pipeline.plan_study = probe.wrap(pipeline.plan_study, "plan", second)
    analyse = pipeline.analyse

    def timed_analyse(svc: Any, study_uid: str, assignment: Any) -> Any:
        """Active models on the latency path ("analyse"); shadow ones after delivery."""
        t0 = time.perf_counter()
        try:
            return analyse(svc, study_uid, assignment)
        finally:
            name = "shadow" if assignment.role == "shadow" else "analyse"
            probe.record(study_uid, name, (t0, time.perf_counter()))

    pipeline.analyse = timed_analyse
    pipeline.report = probe.wrap(pipeline.report, "report", second)
    pipeline.finish = probe.wrap(pipeline.finish, "finish", second)

    def delivered_study(*args: Any, only: Any = None, **kwargs: Any) -> str | None:
        uids = {row.study_instance_uid for row in only or []}
        return uids.pop() if len(uids) == 1 else None

    flow_module.deliver_due = probe.wrap(flow_module.deliver_due, "deliver", delivered_study)
    claim = svc.catalogue.claim_for_triage

    def claim_for_triage(study_uid: str, *args: Any, **kwargs: Any) -> int | None:
        generation = claim(study_uid, *args, **kwargs)
        if generation is not None:
            probe.record(study_uid, "claimed", time.perf_counter())
        return generation

    svc.catalogue.claim_for_triage = claim_for_triage
    claim_next = svc.catalogue.claim_next

    def timed_claim_next(*args: Any, **kwargs: Any) -> Any:
        claim = claim_next(*args, **kwargs)
        if claim is not None:
            probe.record(claim.study_instance_uid, "claimed", time.perf_counter())
        return claim

    svc.catalogue.claim_next = timed_claim_next
    run_study = node.run_study

    def timed_run_study(study_uid: str, generation: int) -> Any:
        t0 = time.perf_counter()
        try:
            return run_study(study_uid, generation)
        finally:
            probe.record(study_uid, "run", (t0, time.perf_counter()))

    node.run_study = timed_run_study


class SrWatcher(threading.Thread):
    """Polls Orthanc's /tools/find for an SR series in each study; notes when each appears."""

    def __init__(self, pacs: Orthanc, interval: float = 0.1) -> None:
        super().__init__(name="sr-watcher", daemon=True)
        self.pacs = pacs
        self.interval = interval
        self.pending: set[str] = set()
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def watch(self, study_uid: str) -> None:
        with self.lock:
            self.pending.add(study_uid)

    def run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                pending = sorted(self.pending - set(self.seen))
            for uid in pending:
                query = {"Level": "Series", "Query": {"StudyInstanceUID": uid, "Modality": "SR"}}
                try:
                    found = self.pacs.post("/tools/find", json.dumps(query).encode())
                except OSError:
                    continue
                if found:
                    with self.lock:
                        self.seen[uid] = time.perf_counter()
            self.stop.wait(self.interval)

    def wait_for(self, uids: list[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if all(u in self.seen for u in uids):
                    return True
            time.sleep(0.05)
        return False


def _wall_to_perf(value: dt.datetime | None, offset: float) -> float | None:
    """A naive-UTC catalogue datetime as a time.perf_counter value."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC).timestamp() - offset


def measure_latency(
    passes: dict[str, list[StudyFiles]],
    quiet: float,
    scratch: Path,
    models: Path | None,
    timeout_per_study: float,
) -> dict[str, Any]:
    """Run the node once; each pass sends its own studies. ``isolated``: the next study is sent
    only after the previous SR arrived. ``back_to_back``: studies are sent one after the other
    without waiting, so later ones queue behind earlier ones."""
    from triage.app.runtime import configure_logging
    from triage.config import load_settings

    pacs = Orthanc(scratch / "pacs")
    pacs.start()
    home = scratch / "node"
    home.mkdir(parents=True)  # Prefect wants PREFECT_HOME's parent before Services.open makes it
    env = {
        "TRIAGE_HOME": str(home),
        "TRIAGE_PACS": pacs.node,
        "TRIAGE_QUIET_SECONDS": f"{quiet:g}",
        "TRIAGE_PORT": str(free_port()),
        "TRIAGE_AE_TITLE": TRIAGE_AE,
        "TRIAGE_LOG_LEVEL": "WARNING",
    }
    if models is not None:
        env["TRIAGE_MODELS"] = str(models)
    settings = load_settings(env)
    configure_logging(settings.log_level)
    from triage.app.node import start_node

    t0 = time.perf_counter()
    node = start_node(settings)
    svc = node.svc
    startup_s = time.perf_counter() - t0
    if not svc.models:
        node.stop()
        pacs.stop()
        raise SystemExit(
            f"no model bundle under {settings.models}: pass --models DIR (a folder whose "
            "subfolders hold triage.json), e.g. after models/train_ich_classifier.py"
        )
    probe = Probe()
    instrument(node, svc, probe)
    watcher = SrWatcher(pacs)
    watcher.start()
    offset = time.time() - time.perf_counter()
    sends: dict[str, tuple[float, float]] = {}
    complete: dict[str, bool] = {}

    def send(s: StudyFiles) -> None:
        watcher.watch(s.study_instance_uid)
        start = time.perf_counter()
        storescu(TRIAGE_AE, node.port, [s.folder])
        sends[s.study_instance_uid] = (start, time.perf_counter())
        seconds = sends[s.study_instance_uid][1] - start
        log(f"sent {s.accession_number}: {s.instances} instances in {seconds:.1f} s")

    try:
        warm = warmup_study(scratch / "warmup")
        log(f"warm-up: 1 study of {warm.instances} instances (Prefect starts on the first run)")
        t_warm = time.perf_counter()
        watcher.watch(warm.study_instance_uid)
        storescu(TRIAGE_AE, node.port, [warm.folder])
        if not watcher.wait_for([warm.study_instance_uid], 300):
            raise RuntimeError("the warm-up study's SR did not reach Orthanc within 300 s")
        warmup_s = watcher.seen[warm.study_instance_uid] - t_warm
        log(f"warm-up done in {warmup_s:.1f} s (excluded)")
        time.sleep(1.0)  # let the warm-up flow run finish
        for name, studies in passes.items():
            log(f"latency pass {name!r}: {len(studies)} studies")
            uids = [s.study_instance_uid for s in studies]
            if name == "isolated":
                complete[name] = True
                for s in studies:
                    send(s)
                    complete[name] &= watcher.wait_for([s.study_instance_uid], timeout_per_study)
                    time.sleep(1.0)  # the flow run returns after the SR is in the PACS
            else:
                for s in studies:
                    send(s)
                complete[name] = watcher.wait_for(uids, timeout_per_study * len(studies))
                time.sleep(1.0)
            if not complete[name]:
                log(f"timed out waiting for some SRs of pass {name!r}; reporting what arrived")
        timings = svc.catalogue.study_timings()
        from sqlalchemy import select

        from triage.catalogue import Delivery, Study

        with svc.catalogue.session() as session:
            delivered_at = {
                uid: when
                for uid, when in session.execute(
                    select(Study.study_instance_uid, Delivery.delivered_at).join(
                        Study, Study.id == Delivery.study_id
                    )
                )
            }
            states = dict(session.execute(select(Study.study_instance_uid, Study.state)).all())
            priorities = dict(
                session.execute(select(Study.study_instance_uid, Study.priority)).all()
            )
    finally:
        watcher.stop.set()
        node.stop()
        svc.close()
        pacs.stop()

    out: dict[str, Any] = {
        "quiet_seconds": quiet,
        "node_start_s": startup_s,
        "warmup_s": warmup_s,
        "model": [f"{m.name} {m.version}" for m in svc.models],
        "model_path": str(settings.models),
        "device": str(svc.device),
        "passes": {},
    }
    for name, studies in passes.items():
        rows = []
        for s in studies:
            uid = s.study_instance_uid
            if uid not in sends:
                continue
            row = study_row(
                s,
                sends[uid],
                probe.events.get(uid, {}),
                watcher.seen.get(uid),
                timings.get(uid, {}),
                _wall_to_perf(delivered_at.get(uid), offset),
            )
            row["state"] = states.get(uid)
            row["priority"] = priorities.get(uid)
            rows.append(row)
        out["passes"][name] = {
            "complete": complete.get(name, False),
            "studies": rows,
            "summary": summarise(rows, quiet),
        }
    return out


def study_row(
    s: StudyFiles,
    send: tuple[float, float],
    ev: dict[str, Any],
    seen: float | None,
    cat: dict[str, float],
    delivered: float | None,
) -> dict[str, Any]:
    """One study's latency and its split into stages (seconds)."""
    start, ack = send

    def span(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else b - a

    lib_s = sum(ev.get(k, 0.0) for k in ("plan_s", "analyse_s", "report_s", "finish_s"))
    lib_s += ev.get("deliver_s", 0.0)
    body_end = ev.get("deliver_end", ev.get("finish_end"))
    api = cat.get("assemble_s", 0.0) + cat.get("preprocess_s", 0.0) + cat.get("infer_s", 0.0)
    stages = {
        "quiet_wait_s": span(ack, ev.get("claimed")),
        "queue_wait_s": span(ev.get("claimed"), ev.get("run_start")),
        "flow_start_s": span(ev.get("run_start"), ev.get("plan_start")),
        "plan_s": ev.get("plan_s"),
        "assemble_s": cat.get("assemble_s"),
        "preprocess_s": cat.get("preprocess_s"),
        "infer_s": cat.get("infer_s"),
        "analyse_other_s": None if "analyse_s" not in ev else ev["analyse_s"] - api,
        "report_s": ev.get("report_s"),
        "finish_s": ev.get("finish_s"),
        "deliver_s": ev.get("deliver_s"),
        "shadow_s": ev.get("shadow_s"),
        "prefect_tasks_s": None
        if body_end is None or "plan_start" not in ev
        else body_end - ev["plan_start"] - lib_s,
        "sr_seen_after_deliver_s": span(body_end, seen),
    }
    flow_s = span(ev.get("run_start"), ev.get("run_end"))
    triage_s = cat.get("triage_s")
    return {
        "accession": s.accession_number,
        "instances": s.instances,
        "send_s": ack - start,
        "latency_s": span(ack, seen),
        "delivered_latency_s": span(ack, delivered),
        "catalogue": cat,
        "stages": stages,
        "flow_run_s": flow_s,
        # Prefect on the latency path: creating the flow run up to the first task body, plus
        # the task-run orchestration between library calls up to the end of delivery
        "prefect_overhead_s": None
        if stages["flow_start_s"] is None or stages["prefect_tasks_s"] is None
        else stages["flow_start_s"] + stages["prefect_tasks_s"],
        # everything in the flow run that is not library work, including the flow run's
        # teardown after the SR was sent (it delays the next queued study, not this one)
        "prefect_total_s": None if flow_s is None else flow_s - lib_s - ev.get("shadow_s", 0.0),
        "triage_s_minus_api_s": None if triage_s is None else triage_s - api,
    }


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def summarise(rows: list[dict[str, Any]], quiet: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    lat = [r["latency_s"] for r in rows if r["latency_s"] is not None]
    if lat:
        out["latency_p50_s"] = _pct(lat, 50)
        out["latency_p95_s"] = _pct(lat, 95)
        out["goal_p50_s"] = quiet + 10
        out["goal_met"] = out["latency_p50_s"] <= quiet + 10
    delivered = [r["delivered_latency_s"] for r in rows if r["delivered_latency_s"] is not None]
    if delivered:
        out["delivered_at_latency_p50_s"] = _pct(delivered, 50)
        out["delivered_at_latency_p95_s"] = _pct(delivered, 95)
    service = [
        r["latency_s"] - (r["stages"]["queue_wait_s"] or 0.0)
        for r in rows
        if r["latency_s"] is not None
    ]
    if service:
        out["latency_without_queue_p50_s"] = _pct(service, 50)
        out["latency_without_queue_p95_s"] = _pct(service, 95)
    stages: dict[str, dict[str, float]] = {}
    for name in rows[0]["stages"] if rows else []:
        vals = [r["stages"][name] for r in rows if r["stages"][name] is not None]
        if vals:
            stages[name] = {"p50": _pct(vals, 50), "p95": _pct(vals, 95)}
    for name in (
        "flow_run_s",
        "prefect_overhead_s",
        "prefect_total_s",
        "triage_s_minus_api_s",
        "send_s",
    ):
        vals = [r[name] for r in rows if r[name] is not None]
        if vals:
            stages[name] = {"p50": _pct(vals, 50), "p95": _pct(vals, 95)}
    out["stages"] = stages
    return out


# -- report --------------------------------------------------------------------------------------


PEER_LABELS = {
    "storescp": "dcmtk storescp (no fsync)",
    "orthanc": "Orthanc (fsync)",
    "triage": "triage Receiver (fsync + catalogue)",
    "pynetdicom-nostore": "pynetdicom alone, stores nothing (diagnostic)",
}
STAGE_LABELS = {
    "quiet_wait_s": "quiet period wait (ack -> claimed by the watcher)",
    "queue_wait_s": "queue wait (claimed -> flow run called)",
    "flow_start_s": "Prefect flow-run start (call -> first task body)",
    "plan_s": "plan (series selection)",
    "assemble_s": "volume assembly",
    "preprocess_s": "preprocessing",
    "infer_s": "inference",
    "analyse_other_s": "analyse, rest",
    "shadow_s": "shadow models (after delivery, off the latency path)",
    "report_s": "report (SR built, stored, queued)",
    "finish_s": "finish (catalogue)",
    "deliver_s": "delivery (C-STORE of the SR)",
    "prefect_tasks_s": "Prefect task orchestration within the flow",
    "sr_seen_after_deliver_s": "SR seen by the poller - delivery returned",
    "flow_run_s": "whole flow run (call -> return)",
    "prefect_overhead_s": "Prefect overhead on the latency path",
    "prefect_total_s": "Prefect overhead, whole flow run (incl. teardown)",
    "triage_s_minus_api_s": "catalogue triage_s - (assemble+preprocess+infer)",
    "send_s": "send time per study (storescu)",
}


def print_report(result: dict[str, Any]) -> None:
    rec = result.get("receive")
    if rec:
        print()
        print(
            f"Receive rate: {rec['instances']} instances, {rec['bytes'] / 1e6:.1f} MB, one "
            f"storescu association, median of {len(rec['peers']['triage']['runs_s'])} runs"
        )
        print("| receiver | median s | instances/s | MB/s | runs (s) |")
        print("|---|---:|---:|---:|---|")
        for name, p in rec["peers"].items():
            runs = ", ".join(f"{x:.2f}" for x in p["runs_s"])
            print(
                f"| {PEER_LABELS.get(name, name)} | {p['median_s']:.2f} | "
                f"{p['instances_per_s']:.1f} | "
                f"{p['mb_per_s']:.1f} | {runs} |"
            )
        steps = rec.get("triage_steps_ms_per_instance", {})
        if steps:
            print(
                "triage receiver, ms per instance (median of runs): "
                + ", ".join(f"{k} {v:.2f}" for k, v in steps.items())
                + f"; whole C-STORE {1000 / rec['peers']['triage']['instances_per_s']:.2f}"
            )
        for key, goal in (("orthanc", 1.5), ("storescp", 0.5)):
            ratio = rec[f"ratio_triage_{key}"]
            verdict = "met" if ratio >= goal else "NOT met"
            print(f"triage / {key}: {ratio:.2f}x (goal >= {goal}x: {verdict})")
    lat = result.get("latency")
    if lat:
        print()
        print(
            f"End-to-end latency: quiet period {lat['quiet_seconds']:g} s, model "
            f"{', '.join(lat['model'])} on {lat['device']}; warm-up (excluded) "
            f"{lat['warmup_s']:.1f} s"
        )
        for name, run in lat["passes"].items():
            print_pass(name, run)


def print_pass(name: str, run: dict[str, Any]) -> None:
    s = run["summary"]
    print()
    print(f"Pass {name!r}: {len(run['studies'])} studies")
    if "latency_p50_s" in s:
        verdict = "met" if s["goal_met"] else "NOT met"
        print(
            f"latency p50 {s['latency_p50_s']:.2f} s, p95 {s['latency_p95_s']:.2f} s "
            f"(goal p50 <= {s['goal_p50_s']:g} s: {verdict}); without queue wait "
            f"p50 {s['latency_without_queue_p50_s']:.2f} s, "
            f"p95 {s['latency_without_queue_p95_s']:.2f} s"
        )
    print(
        "| study | instances | send s | latency s | quiet | queue | flow start | "
        "assemble | preprocess | infer | report | deliver | Prefect | state |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    for r in run["studies"]:
        st = r["stages"]
        print(
            f"| {r['accession']} | {r['instances']} | {f(r['send_s'])} | "
            f"{f(r['latency_s'])} | {f(st['quiet_wait_s'])} | {f(st['queue_wait_s'])} | "
            f"{f(st['flow_start_s'])} | {f(st['assemble_s'])} | {f(st['preprocess_s'])} | "
            f"{f(st['infer_s'])} | {f(st['report_s'])} | {f(st['deliver_s'])} | "
            f"{f(r['prefect_overhead_s'])} | {r['state']} |"
        )
    print()
    print("| stage | p50 s | p95 s |")
    print("|---|---:|---:|")
    for key, v in s["stages"].items():
        print(f"| {STAGE_LABELS.get(key, key)} | {v['p50']:.3f} | {v['p95']:.3f} |")
    if "delivered_at_latency_p50_s" in s:
        print(
            "(from the outbox's delivered_at instead of polling Orthanc: "
            f"p50 {s['delivered_at_latency_p50_s']:.2f} s, "
            f"p95 {s['delivered_at_latency_p95_s']:.2f} s)"
        )


SOURCES = (
    "triage/receive/receiver.py",
    "triage/receive/network.py",
    "triage/receive/commit.py",
    "triage/store/local.py",
    "triage/catalogue/database.py",
    "triage/catalogue/receiving.py",
    "triage/catalogue/studies.py",
    "triage/catalogue/outbox.py",
    "triage/app/node.py",
    "triage/app/pipeline.py",
    "triage/imaging/volume.py",
    "triage/analysis/preprocess.py",
    "triage/report/sr.py",
    "triage/deliver/outbox.py",
    "flows/triage.py",
)


def source_digests() -> dict[str, str]:
    """sha256 (first 12 hex digits) of the library files measured: ties figures to code."""
    import hashlib

    return {
        name: hashlib.sha256((ROOT / name).read_bytes()).hexdigest()[:12]
        for name in SOURCES
        if (ROOT / name).is_file()
    }


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        info["memory_gib"] = round(kb / 2**20, 1)
    for tool, flag in (("storescu", "--version"), ("Orthanc", "--version")):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            text = subprocess.run([tool, flag], capture_output=True, text=True).stdout
            info[tool] = text.splitlines()[0].strip() if text else ""
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--pixel", type=float, default=0.45, help="pixel spacing in mm")
    parser.add_argument("--step", type=float, default=0.8, help="slice step in mm")
    parser.add_argument("--quiet", type=float, default=5.0, help="TRIAGE_QUIET_SECONDS")
    parser.add_argument("--repeats", type=int, default=3, help="receive runs per peer")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--storescp-pdu", type=int, default=131072, help="storescp -pdu")
    parser.add_argument(
        "--models", type=Path, default=None, help="TRIAGE_MODELS (default: the project's)"
    )
    parser.add_argument("--skip-receive", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument(
        "--skip-isolated",
        action="store_true",
        help="skip the latency pass that waits for each SR before sending the next study",
    )
    parser.add_argument("--timeout-per-study", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    for tool in ("storescu", "storescp", "echoscu", "Orthanc"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (dcmtk / orthanc Debian packages)")
    if not args.skip_latency:
        from triage.config import load_settings

        models = args.models or load_settings().models
        if not any(models.glob("*/triage.json")):
            parser.error(
                f"no model bundle under {models} (a folder whose subfolders hold triage.json): "
                "train one with models/train_ich_classifier.py, pass --models DIR, or use "
                "--skip-latency"
            )
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = args.out or ROOT / "benchmarks" / "results" / f"pipeline-{stamp}.json"

    t0 = time.perf_counter()
    studies, cache, hit = studies_cached(
        args.studies, args.slices, args.size, args.pixel, args.step, args.seed
    )
    how = "cached" if hit else "generated"
    log(f"{len(studies)} studies in {cache} ({how}, {time.perf_counter() - t0:.1f} s)")
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "parameters": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine(),
        "sources": source_digests(),
        "data": {
            "cache": str(cache),
            "studies": len(studies),
            "instances_per_study": studies[0].instances if studies else 0,
            "bytes": sum(s.bytes for s in studies),
            "generation": "triage.synthetic.phantom.head_phantom at half resolution, trilinear "
            "upsampling "
            "(torch), fresh gaussian noise at full resolution",
        },
    }
    with tempfile.TemporaryDirectory(prefix="triage-bench-") as tmp:
        scratch = Path(tmp)
        if not args.skip_receive:
            result["receive"] = measure_receive(
                studies, args.repeats, scratch / "receive", args.storescp_pdu
            )
        if not args.skip_latency:
            passes = {"back_to_back": studies}
            if not args.skip_isolated:
                isolated, _, _ = studies_cached(
                    args.studies, args.slices, args.size, args.pixel, args.step, args.seed + 1
                )
                passes = {"isolated": isolated, **passes}
            result["latency"] = measure_latency(
                passes, args.quiet, scratch / "latency", args.models, args.timeout_per_study
            )
    result["total_s"] = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print_report(result)
    print(f"\nwrote {out} (total {result['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
