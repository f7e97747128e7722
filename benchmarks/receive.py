"""Receive benchmark: durable receive rate against dcmtk storescp and Orthanc, over one
association and over several concurrent ones, in the same run.

    PYTHONPATH=. .venv/bin/python benchmarks/receive.py [--studies 5] [--associations 1,4]
                                                        [--repeats 3] [--out FILE.json]

The studies are the pipeline benchmark's synthetic head CTs (``benchmarks/pipeline.py``: a scout
plus ``--slices`` slices of ``--size`` x ``--size`` int16 pixels, cached under $TMPDIR). For each
association count N the files are split into N contiguous parts (whole series parts, as N
modalities would send them) and N dcmtk ``storescu`` processes send them at the same time, one
association each; the time is from the start of the first to the exit of the last, when every
instance has been acknowledged. The receivers:

- ``storescp``: dcmtk, writes files with no fsync (``-pdu 131072``, as in the pipeline benchmark);
- ``orthanc``: Orthanc as ``tests/support/orthanc.py`` starts it (fsync, SQLite index);
- ``triage``: ``triage receive`` in a process of its own (a fresh TRIAGE_HOME: the local store,
  fsynced, and the SQLite catalogue), as an operator runs it;
- ``triage-before`` (``--before DIR``): ``triage receive`` from another source tree, e.g. a
  ``git archive`` of an older commit, so that before and after run under the same load;
- ``pynetdicom-nostore`` (diagnostic, ``--diagnostic``): pynetdicom as the receiver runs it (its
  AE set-up and reactors, in this process) with a handler that decodes each data set and stores
  nothing: the most the network layer can do on its own.

Each (receiver, N) runs ``--repeats`` times, interleaved in rotating order; the median is
reported with the ratios against the goals of issue 14 (triage >= 1.5x Orthanc and >= 0.5x
storescp on one association, >= 2x Orthanc with 4). ``TCP_NODELAY=1`` is set for dcmtk and
Orthanc. Before each timed run the disk is synced and the script waits 1 s; received data is
deleted only at the end (the disk is mounted with ``discard``: large deletes slow the next
writer).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from pipeline import (  # noqa: E402  (benchmarks/pipeline.py)
    DCMTK_ENV,
    SCU_AE,
    TRIAGE_AE,
    log,
    machine,
    orthanc_peer,
    storescp_peer,
    studies_cached,
    wait_for_echo,
)
from support.orthanc import free_port  # noqa: E402  (tests/support/orthanc.py)

GOALS = {  # issue 14: (association count, peer) -> the least triage / peer ratio
    (1, "orthanc"): 1.5,
    (1, "storescp"): 0.5,
    (4, "orthanc"): 2.0,
}
LABELS = {
    "storescp": "dcmtk storescp (no fsync)",
    "orthanc": "Orthanc (fsync)",
    "triage": "**triage receive (fsync + catalogue)**",
    "triage-before": "triage receive, before (``--before``)",
    "pynetdicom-nostore": "pynetdicom alone, stores nothing (*diagnostic*)",
}
SOURCES = (
    "triage/receive/receiver.py",
    "triage/receive/network.py",
    "triage/receive/commit.py",
    "triage/store/local.py",
    "triage/catalogue/database.py",
    "triage/catalogue/receiving.py",
)


@contextlib.contextmanager
def triage_process(
    work: Path, tree: Path = ROOT, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[str, int, Callable[[], int]]]:
    """``triage receive`` (of the source tree ``tree``) as a child process with a fresh home;
    the count is the catalogue's."""
    home = work / "home"
    home.mkdir(parents=True)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "TRIAGE_HOME": str(home),
        "TRIAGE_AE_TITLE": TRIAGE_AE,
        "TRIAGE_HOST": "127.0.0.1",
        "TRIAGE_PORT": str(port),
        "TRIAGE_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    log_file = open(work / "triage.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(  # cwd: `-m` puts it first on sys.path, before PYTHONPATH
        [sys.executable, "-m", "triage.app.cli", "receive"],
        cwd=work,
        env=env,
        stdout=log_file,
        stderr=log_file,
    )
    try:
        wait_for_echo(TRIAGE_AE, port, timeout=60)
        yield TRIAGE_AE, port, lambda: catalogued(home)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()


@contextlib.contextmanager
def pynetdicom_peer(_work: Path) -> Iterator[tuple[str, int, Callable[[], int]]]:
    """Diagnostic: the receiver's pynetdicom (AE set-up, reactors) storing nothing."""
    import threading

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


def catalogued(home: Path) -> int:
    import sqlite3

    dbs = list(home.rglob("*.db"))
    if len(dbs) != 1:
        raise RuntimeError(f"expected one catalogue database under {home}, found {dbs}")
    with contextlib.closing(sqlite3.connect(dbs[0])) as db:
        return int(db.execute("select count(*) from instances").fetchone()[0])


def send(called_ae: str, port: int, parts: list[list[Path]]) -> float:
    """Send each part over its own storescu association, all at the same time; returns the wall
    time until the last one exits."""
    procs = []
    t0 = time.perf_counter()
    for files in parts:
        cmd = ["storescu", "-aet", SCU_AE, "-aec", called_ae, "127.0.0.1", str(port)]
        procs.append(
            subprocess.Popen(
                [*cmd, *map(str, files)],
                env=DCMTK_ENV,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
    errors = []
    for proc in procs:
        _, err = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            errors.append(err.decode(errors="replace")[-2000:])
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"storescu to {called_ae} failed: {errors}")
    return elapsed


def split(files: list[Path], n: int) -> list[list[Path]]:
    size = -(-len(files) // n)
    return [files[i : i + size] for i in range(0, len(files), size)]


def measure(
    files: list[Path],
    nbytes: int,
    counts: list[int],
    peers: dict[str, Callable[[Path], contextlib.AbstractContextManager[Any]]],
    repeats: int,
    scratch: Path,
) -> dict[str, Any]:
    for path in files:  # into the page cache: every receiver reads the same warm files
        path.read_bytes()
    runs: dict[tuple[str, int], list[float]] = {(p, n): [] for p in peers for n in counts}
    cases = list(runs)
    for rep in range(repeats):
        shift = rep % len(cases)
        for name, n in cases[shift:] + cases[:shift]:  # rotate the order
            work = scratch / f"{name}-{n}-{rep}"
            work.mkdir(parents=True)
            with peers[name](work) as (ae, port, received):
                os.sync()
                time.sleep(1.0)
                seconds = send(ae, port, split(files, n))
                got = received()
            if got != len(files):
                raise RuntimeError(f"{name} stored {got} of {len(files)} instances")
            runs[name, n].append(seconds)
            log(
                f"{name:18} {n} assoc run {rep + 1}/{repeats}: {seconds:6.2f} s, "
                f"{len(files) / seconds:7.1f} inst/s"
            )
    shutil.rmtree(scratch, ignore_errors=True)
    os.sync()
    result: dict[str, Any] = {"instances": len(files), "bytes": nbytes, "by_associations": {}}
    for n in counts:
        rates: dict[str, Any] = {}
        for name in peers:
            times = runs[name, n]
            med = statistics.median(times)
            rates[name] = {
                "runs_s": times,
                "median_s": med,
                "instances_per_s": len(files) / med,
                "mb_per_s": nbytes / 1e6 / med,
            }
        ratios = {
            peer: {
                "ratio": rates["triage"]["instances_per_s"] / rates[peer]["instances_per_s"],
                "goal": GOALS.get((n, peer)),
            }
            for peer in ("orthanc", "storescp", "triage-before")
            if peer in rates and "triage" in rates
        }
        result["by_associations"][str(n)] = {"peers": rates, "ratios": ratios}
    return result


def print_report(result: dict[str, Any]) -> None:
    print()
    print(
        f"Receive rate: {result['instances']} instances, {result['bytes'] / 1e6:.1f} MB, "
        f"median of {result['repeats']} runs"
    )
    for n, block in result["by_associations"].items():
        print()
        print(f"{n} association(s)")
        print("| receiver | median s | instances/s | MB/s | runs (s) |")
        print("|---|---:|---:|---:|---|")
        for name, p in block["peers"].items():
            runs = ", ".join(f"{x:.2f}" for x in p["runs_s"])
            print(
                f"| {LABELS.get(name, name)} | {p['median_s']:.2f} | "
                f"{p['instances_per_s']:.1f} | {p['mb_per_s']:.1f} | {runs} |"
            )
        for peer, r in block["ratios"].items():
            goal = r["goal"]
            verdict = (
                ""
                if goal is None
                else f" (goal >= {goal}x: " + ("met)" if r["ratio"] >= goal else "NOT met)")
            )
            print(f"triage / {peer}, {n} association(s): {r['ratio']:.2f}x{verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--instances", type=int, default=0, help="send only the first N files (quick runs)"
    )
    parser.add_argument("--associations", default="1,4", help="comma-separated counts")
    parser.add_argument("--repeats", type=int, default=3, help="runs per receiver and count")
    parser.add_argument("--storescp-pdu", type=int, default=131072, help="storescp -pdu")
    parser.add_argument(
        "--peers", default="storescp,orthanc,triage", help="comma-separated receivers"
    )
    parser.add_argument("--diagnostic", action="store_true", help="also pynetdicom storing nothing")
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="also run triage receive from this source tree (e.g. a `git archive` of an older "
        "commit), interleaved with the others: before and after under the same load",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    for tool in ("storescu", "storescp", "echoscu", "Orthanc"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed (dcmtk / orthanc Debian packages)")
    available: dict[str, Callable[[Path], contextlib.AbstractContextManager[Any]]] = {
        "storescp": lambda w: storescp_peer(w, args.storescp_pdu),
        "orthanc": orthanc_peer,
        "triage": triage_process,
        "pynetdicom-nostore": pynetdicom_peer,
    }
    if args.before is not None:
        before = args.before.resolve()
        available["triage-before"] = lambda w: triage_process(w, before)
    names = [p for p in args.peers.split(",") if p]
    if args.before is not None:
        names.append("triage-before")
    if args.diagnostic:
        names.append("pynetdicom-nostore")
    unknown = [p for p in names if p not in available]
    if unknown:
        parser.error(f"unknown receiver(s) {unknown}: choose from {sorted(available)}")
    counts = [int(n) for n in args.associations.split(",")]
    studies, cache, _ = studies_cached(args.studies, args.slices, args.size, 0.45, 0.8, args.seed)
    files = sorted(p for s in studies for p in s.folder.iterdir() if p.is_file())
    if args.instances:
        files = files[: args.instances]
    nbytes = sum(p.stat().st_size for p in files)
    log(f"{len(files)} instances, {nbytes / 1e6:.1f} MB in {cache}")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = args.out or ROOT / "benchmarks" / "results" / f"receive-{stamp}.json"
    with tempfile.TemporaryDirectory(prefix="triage-bench-receive-") as tmp:
        result = measure(
            files, nbytes, counts, {p: available[p] for p in names}, args.repeats, Path(tmp)
        )
    result["repeats"] = args.repeats
    result["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    result["machine"] = machine()
    result["sources"] = {
        name: __import__("hashlib").sha256((ROOT / name).read_bytes()).hexdigest()[:12]
        for name in SOURCES
        if (ROOT / name).is_file()
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print_report(result)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
