"""Load test: many studies from concurrent modalities into a running node; nothing may be lost.

    .venv/bin/python benchmarks/load.py [--studies 100] [--slices 50] [--size 64] [--senders 4]
                                        [--duplicates 0.05] [--split 0.25] [--batch 3]
                                        [--quiet 3] [--deadline S] [--max-rss-mb 4096]
                                        [--out FILE.json] [--work DIR] [--keep]

What runs, all real and on 127.0.0.1: Orthanc as the PACS (``tests/orthanc.py``), the node as
``triage serve`` in its own process (fresh ``TRIAGE_HOME``, free ``TRIAGE_PORT``,
``TRIAGE_DEVICE=cpu``, ``TRIAGE_PACS`` = that Orthanc, ``TRIAGE_QUIET_SECONDS=--quiet``), and
``--senders`` dcmtk ``storescu`` processes at a time as the modalities.

The studies are synthetic head CTs (``triage.app.demo.write_demo_studies``: a scout and an axial
series of ``--slices`` slices of ``--size`` x ``--size`` pixels, lesion in every other one).
Each study goes to one sender, in turn; ``--split`` of them are split between two senders (odd
and even files), so their instances arrive over two associations at once; ``--duplicates`` of
all files are sent a second time, by another sender. Each sender sends ``--batch`` studies per
association, with their files interleaved, so associations open and close all through the run
and studies interleave within and across them.

First one warm-up study (excluded from every figure) starts Prefect's embedded API and loads
the model. Then the load is sent; the script waits until every study is triaged and every SR is
in Orthanc, or ``--deadline`` seconds. Meanwhile it samples the resident memory of the node's
process and its children (psutil, every 0.5 s).

It reports: instances sent (with duplicates), acknowledged by the node, stored (catalogue);
studies received and triaged; SRs expected and in Orthanc; ``lost`` (instances not stored +
studies not triaged + SRs missing from Orthanc); instances/s (acknowledged / sending time);
studies/hour (studies / time from the first send to the last SR in the PACS); study latency
p50/p95 (the catalogue's last instance received -> SR delivered, i.e. ``Study.last_instance_at``
-> ``outbox.delivered_at``); peak RSS. It exits 1 when anything is lost, not acknowledged, not
analysed, or memory went over ``--max-rss-mb``; 2 when the set-up itself fails.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from support.orthanc import ORTHANC, Orthanc, free_port  # noqa: E402  (tests/support/orthanc.py)

from triage.app.demo import DemoStudy, write_demo_studies  # noqa: E402

TRIAGE_AE = "TRIAGE"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
ACK = re.compile(r"Received Store Response \(Success\)")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- the plan: which sender sends which files, in which association --------------------------


@dataclass
class Batch:
    """One storescu run: one association."""

    sender: int
    files: list[Path]
    acknowledged: int = 0
    returncode: int | None = None
    seconds: float = 0.0


@dataclass
class Plan:
    batches: list[list[Batch]]  # per sender, in order
    unique_files: int
    split_uids: set[str]
    duplicate_files: int
    duplicated_uids: set[str]  # studies with a file that is sent twice

    @property
    def files_sent(self) -> int:
        return sum(len(b.files) for sender in self.batches for b in sender)


def interleave(groups: list[list[Path]]) -> list[Path]:
    """Round robin over the groups: the first file of each, then the second of each, ..."""
    out: list[Path] = []
    for i in range(max((len(g) for g in groups), default=0)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def make_plan(
    studies: list[DemoStudy], senders: int, batch: int, split: float, duplicates: float, seed: int
) -> Plan:
    import numpy as np

    rng = np.random.default_rng(seed)
    files = {s.study_instance_uid: sorted(s.folder.glob("*.dcm")) for s in studies}
    # per sender and batch index: the file groups (one per study or half study) it sends
    groups: list[list[list[list[Path]]]] = [[] for _ in range(senders)]
    split_every = round(1 / split) if split > 0 else 0
    splits: set[str] = set()
    for i, study in enumerate(studies):
        sender, slot = i % senders, (i // senders) // batch
        own = files[study.study_instance_uid]
        parts = [(sender, own)]
        # whole rows (one study per sender) are split, so every sender gets as many halves
        if senders > 1 and split_every and (i // senders) % split_every == 0:
            parts = [(sender, own[0::2]), ((sender + 1) % senders, own[1::2])]
            splits.add(study.study_instance_uid)
        for who, part in parts:
            while len(groups[who]) <= slot:
                groups[who].append([])
            groups[who][slot].append(part)
    batches = [[Batch(who, interleave(g)) for g in slots] for who, slots in enumerate(groups)]
    # duplicates: a file sent again by the next sender, in the second half of its batch of the
    # same index (or its last), so mostly while or shortly after the original's association
    study_of = {f: uid for uid, fs in files.items() for f in fs}
    all_files = [f for fs in files.values() for f in fs]
    chosen = rng.choice(len(all_files), size=int(len(all_files) * duplicates), replace=False)
    owner = {f: (b.sender, k) for sender in batches for k, b in enumerate(sender) for f in b.files}
    for index in sorted(int(c) for c in chosen):
        path = all_files[index]
        sender, k = owner[path]
        other = (sender + 1) % senders
        if not batches[other]:
            other = sender
        target = batches[other][min(k, len(batches[other]) - 1)]
        half = len(target.files) // 2
        target.files.insert(int(rng.integers(half, len(target.files) + 1)), path)
    duplicated = {study_of[all_files[int(c)]] for c in chosen}
    return Plan(batches, len(all_files), splits, len(chosen), duplicated)


# -- processes -------------------------------------------------------------------------------


def storescu(port: int, calling_ae: str, files: list[Path], timeout: float) -> tuple[int, int]:
    """Send the files over one association; (return code, success responses)."""
    cmd = ["storescu", "-v", "-nh", "-aet", calling_ae, "-aec", TRIAGE_AE, "127.0.0.1", str(port)]
    done = subprocess.run(
        [*cmd, *map(str, files)], env=DCMTK_ENV, capture_output=True, text=True, timeout=timeout
    )
    return done.returncode, len(ACK.findall(done.stdout + done.stderr))


def wait_for_echo(port: int, node: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.poll() is not None:
            raise RuntimeError(f"the node exited with code {node.returncode} while starting")
        ok = subprocess.run(
            ["echoscu", "-aet", "LOADTEST", "-aec", TRIAGE_AE, "127.0.0.1", str(port)],
            env=DCMTK_ENV,
            capture_output=True,
        )
        if ok.returncode == 0:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the node did not answer C-ECHO within {timeout:.0f} s")


def start_node(home: Path, pacs: Orthanc, port: int, quiet: float, log_file: Path) -> Any:
    """``triage serve`` as a child process, configured by environment only."""
    home.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGE_", "PREFECT_"))}
    env.update(
        TRIAGE_HOME=str(home),
        TRIAGE_HOST="127.0.0.1",
        TRIAGE_PORT=str(port),
        TRIAGE_AE_TITLE=TRIAGE_AE,
        TRIAGE_PACS=pacs.node,
        TRIAGE_WEB_PORT="off",
        TRIAGE_DEVICE="cpu",
        TRIAGE_QUIET_SECONDS=f"{quiet:g}",
        TRIAGE_DELIVERY_BACKOFF_SECONDS="1",
        TRIAGE_LOG_LEVEL="WARNING",
    )
    script = Path(sys.executable).with_name("triage")
    cmd = [str(script), "serve"] if script.is_file() else [sys.executable, "-m", "triage.app.cli"]
    if not script.is_file():
        cmd.append("serve")
    out = open(log_file, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def stop_node(node: subprocess.Popen[bytes]) -> None:
    if node.poll() is None:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(90)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()


@dataclass
class MemorySampler:
    """Resident memory of a process and all its children, sampled in a thread."""

    pid: int
    interval: float = 0.5
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def rss(self) -> int:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - t0, self.rss()))
            self._stop.wait(self.interval)

    def start(self) -> None:
        threading.Thread(target=self.run, name="rss-sampler", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    @property
    def peak(self) -> int:
        return max((s for _, s in self.samples), default=0)


# -- what the node and the PACS hold ---------------------------------------------------------


def catalogue_state(database: Path, uids: set[str]) -> dict[str, dict[str, Any]]:
    """Per study of ours: state, generation, instances, last instance, SR delivery times."""
    from sqlalchemy import select

    from triage.catalogue import Catalogue, Delivery, Instance, Series, Study

    catalogue = Catalogue(f"sqlite:///{database}")
    try:
        with catalogue.session() as s:
            studies = {
                row.study_instance_uid: {
                    "state": row.state,
                    "generation": row.generation,
                    "last_instance_at": row.last_instance_at,
                    "instances": 0,
                    "delivered": [],
                    "pending": 0,
                }
                for row in s.execute(
                    select(
                        Study.study_instance_uid,
                        Study.state,
                        Study.generation,
                        Study.last_instance_at,
                    )
                )
                if row.study_instance_uid in uids
            }
            arrivals: dict[str, list[Any]] = {}
            for uid, received_at in s.execute(
                select(Study.study_instance_uid, Instance.received_at)
                .join(Series, Series.study_id == Study.id)
                .join(Instance, Instance.series_id == Series.id)
            ):
                arrivals.setdefault(uid, []).append(received_at)
            for uid, times in arrivals.items():
                if uid in studies:
                    times.sort()
                    studies[uid]["instances"] = len(times)
                    # the longest pause between two instances of the study: over the quiet
                    # period, the study was complete for the node before its last instances
                    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
                    studies[uid]["max_gap_s"] = max(gaps, default=0.0)
            deliveries = s.execute(
                select(Study.study_instance_uid, Delivery.state, Delivery.delivered_at).join(
                    Study, Study.id == Delivery.study_id
                )
            )
            for uid, state, delivered_at in deliveries:
                if uid not in studies:
                    continue
                if state == "delivered" and delivered_at is not None:
                    studies[uid]["delivered"].append(delivered_at)
                else:
                    studies[uid]["pending"] += 1
        timings = catalogue.study_timings()
        for uid, row in studies.items():
            row["timings"] = timings.get(uid, {})
        return studies
    finally:
        catalogue.close()


def srs_in_pacs(pacs: Orthanc) -> dict[str, int]:
    """SR instances in Orthanc per StudyInstanceUID."""
    studies = {s["ID"]: s["MainDicomTags"]["StudyInstanceUID"] for s in pacs.get("/studies?expand")}
    query = json.dumps({"Level": "Series", "Query": {"Modality": "SR"}, "Expand": True}).encode()
    out: dict[str, int] = {}
    for series in pacs.post("/tools/find", query):
        uid = studies.get(series["ParentStudy"])
        if uid is not None:
            out[uid] = out.get(uid, 0) + len(series["Instances"])
    return out


def done(
    database: Path, pacs: Orthanc, uids: set[str]
) -> tuple[bool, dict[str, Any], dict[str, int]]:
    studies = catalogue_state(database, uids)
    srs = srs_in_pacs(pacs)
    complete = (
        len(studies) == len(uids)
        and all(
            r["state"] in ("triaged", "not analysed") and r["pending"] == 0
            for r in studies.values()
        )
        and all(srs.get(uid, 0) >= 1 for uid in uids)
    )
    return complete, studies, srs


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# -- figures ---------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def figures(
    args: argparse.Namespace,
    plan: Plan,
    studies: dict[str, dict[str, Any]],
    srs: dict[str, int],
    uids: set[str],
    send_s: float,
    total_s: float,
    complete: bool,
    quarantined: int,
    sampler: MemorySampler,
    baseline_rss: int,
) -> dict[str, Any]:
    batches = [b for sender in plan.batches for b in sender]
    acknowledged = sum(b.acknowledged for b in batches)
    stored = sum(r["instances"] for r in studies.values())
    final = [r for r in studies.values() if r["state"] in ("triaged", "not analysed")]
    triaged = sum(r["state"] == "triaged" for r in studies.values())
    not_analysed = sum(r["state"] == "not analysed" for r in studies.values())
    srs_ok = sum(1 for uid in uids if srs.get(uid, 0) >= 1)
    latencies = [
        (max(r["delivered"]) - r["last_instance_at"]).total_seconds()
        for r in studies.values()
        if r["delivered"]
    ]
    triage_s = [r["timings"]["triage_s"] for r in studies.values() if "triage_s" in r["timings"]]
    lost_instances = plan.unique_files - stored
    lost = {
        "instances": lost_instances,
        "studies_not_triaged": len(uids) - len(final),
        "srs_not_in_pacs": len(uids) - srs_ok,
    }
    return {
        "parameters": {
            k: getattr(args, k)
            for k in (
                "studies",
                "slices",
                "size",
                "senders",
                "duplicates",
                "split",
                "batch",
                "quiet",
            )
        },
        "complete": complete,
        "instances": {
            "unique": plan.unique_files,
            "sent": plan.files_sent,
            "duplicates_sent": plan.duplicate_files,
            "acknowledged": acknowledged,
            "stored": stored,
            "quarantined": quarantined,
        },
        "associations": len(batches),
        "failed_associations": sum(b.returncode != 0 for b in batches),
        "studies": {
            "sent": len(uids),
            "split_across_two_senders": len(plan.split_uids),
            "received": len(studies),
            "triaged": triaged,
            "not_analysed": not_analysed,
            "triaged_more_than_once": sum(r["generation"] > 1 for r in studies.values()),
            "triaged_more_than_once_neither_split_nor_duplicated": sum(
                r["generation"] > 1
                for u, r in studies.items()
                if u not in plan.split_uids and u not in plan.duplicated_uids
            ),
            "with_a_duplicate": len(plan.duplicated_uids),
            "pause_over_quiet_period": sum(
                r.get("max_gap_s", 0) > args.quiet for r in studies.values()
            ),
        },
        "srs": {
            "expected": len(uids),
            "in_pacs": srs_ok,
            "sr_instances_in_pacs": sum(srs.get(u, 0) for u in uids),
        },
        "lost": sum(lost.values()),
        "lost_detail": lost,
        "send_s": send_s,
        "total_s": total_s,
        "instances_per_s": acknowledged / send_s if send_s else None,
        "studies_per_hour": len(final) / total_s * 3600 if total_s else None,
        "latency_s": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "max": max(latencies, default=None),
            "what": "catalogue: last instance received -> SR delivered to the PACS",
        },
        "triage_flow_s": {"p50": percentile(triage_s, 50), "p95": percentile(triage_s, 95)},
        "rss_mb": {
            "peak": sampler.peak / 2**20,
            "after_warm_up": baseline_rss / 2**20,
            "at_end": (sampler.samples[-1][1] if sampler.samples else 0) / 2**20,
            "limit": args.max_rss_mb,
            "what": "node process and its children (psutil), sampled every 0.5 s",
        },
        "rss_samples_mb": [(round(t, 1), round(r / 2**20, 1)) for t, r in sampler.samples[::10]],
        "per_study": [
            {
                "study_instance_uid": uid,
                "split": uid in plan.split_uids,
                "duplicate_sent": uid in plan.duplicated_uids,
                "state": r["state"],
                "generation": r["generation"],
                "instances": r["instances"],
                "max_gap_s": r.get("max_gap_s"),
                "latency_s": (max(r["delivered"]) - r["last_instance_at"]).total_seconds()
                if r["delivered"]
                else None,
                "timings": r["timings"],
            }
            for uid, r in sorted(studies.items())
        ],
    }


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gb": psutil.virtual_memory().total / 2**30,
        "load_average_at_start": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def print_summary(result: dict[str, Any]) -> None:
    i, st, sr, lat, rss = (
        result["instances"],
        result["studies"],
        result["srs"],
        result["latency_s"],
        result["rss_mb"],
    )

    def seconds(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f} s"

    plain = st["triaged_more_than_once_neither_split_nor_duplicated"]
    rows = [
        ("instances sent (with duplicates)", f"{i['sent']} ({i['duplicates_sent']} duplicates)"),
        (
            "instances acknowledged / stored",
            f"{i['acknowledged']} / {i['stored']} of {i['unique']}",
        ),
        ("instances quarantined", str(i["quarantined"])),
        ("associations", f"{result['associations']} ({result['failed_associations']} failed)"),
        ("studies received / triaged", f"{st['received']} / {st['triaged']} of {st['sent']}"),
        ("studies not analysed", str(st["not_analysed"])),
        ("studies split over 2 senders", str(st["split_across_two_senders"])),
        (
            "studies triaged more than once",
            f"{st['triaged_more_than_once']} ({plain} neither split nor with a duplicate; "
            f"{st['pause_over_quiet_period']} with a pause > quiet period between instances)",
        ),
        ("SRs expected / in Orthanc", f"{sr['expected']} / {sr['in_pacs']}"),
        ("**lost**", f"**{result['lost']}**"),
        ("instances/s (while sending)", f"{result['instances_per_s']:.1f}"),
        ("studies/hour (end to end)", f"{result['studies_per_hour']:.0f}"),
        (
            "latency p50 / p95 / max",
            f"{seconds(lat['p50'])} / {seconds(lat['p95'])} / {seconds(lat['max'])}",
        ),
        (
            "peak RSS (node + children)",
            f"{rss['peak']:.0f} MB (after warm-up {rss['after_warm_up']:.0f} MB)",
        ),
        ("sending / total time", f"{result['send_s']:.1f} s / {result['total_s']:.1f} s"),
    ]
    print("\n| figure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


# -- the run ---------------------------------------------------------------------------------


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    spacing = (224.0 / args.size, 224.0 / args.size, 5.0)
    shape = (args.size, args.size, args.slices)
    run_id = uuid.uuid4().hex[:12]
    t = time.perf_counter()
    studies = write_demo_studies(
        work / "studies",
        args.studies,
        seed=args.seed,
        shape=shape,
        spacing=spacing,
        unanalysable=0,
        run_id=run_id,
    )
    warm = write_demo_studies(
        work / "warm-up",
        1,
        seed=args.seed + 1,
        shape=shape,
        spacing=spacing,
        unanalysable=0,
        run_id=run_id + "w",
    )[0]
    elapsed = time.perf_counter() - t
    log(f"wrote {len(studies)} studies of {args.slices + 1} instances in {elapsed:.1f} s")
    plan = make_plan(studies, args.senders, args.batch, args.split, args.duplicates, args.seed)
    uids = {s.study_instance_uid for s in studies}

    pacs = Orthanc(work / "pacs")
    pacs.start()
    port = free_port()
    database = work / "node" / "catalogue.db"
    node = start_node(work / "node", pacs, port, args.quiet, work / "node.log")
    sampler = MemorySampler(node.pid)
    sampler.start()
    try:
        wait_for_echo(port, node, 120)
        log(f"node up on port {port}; warm-up study (Prefect's API starts, the model loads)")
        code, acked = storescu(port, "LOADWARM", sorted(warm.folder.glob("*.dcm")), 300)
        if code != 0:
            raise RuntimeError(f"the warm-up study was not accepted (storescu exit {code})")
        if not wait_until(lambda: done(database, pacs, {warm.study_instance_uid})[0], 300):
            raise RuntimeError("the warm-up study's SR did not reach Orthanc within 300 s")
        baseline_rss = sampler.rss()
        log(
            f"warm-up done; {plan.files_sent} files over {sum(map(len, plan.batches))} "
            f"associations from {args.senders} senders"
        )

        t0 = time.monotonic()
        deadline = args.deadline or 300 + 10 * args.studies

        def sender(k: int) -> None:
            for batch in plan.batches[k]:
                t1 = time.monotonic()
                batch.returncode, batch.acknowledged = storescu(
                    port, f"LOAD{k + 1}", batch.files, max(60.0, deadline - (t1 - t0))
                )
                batch.seconds = time.monotonic() - t1

        threads = [threading.Thread(target=sender, args=(k,)) for k in range(args.senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        send_s = time.monotonic() - t0
        log(f"sent in {send_s:.1f} s; waiting for every study to be triaged and its SR in Orthanc")

        state: dict[str, Any] = {}

        def all_done() -> bool:
            if node.poll() is not None:
                raise RuntimeError(f"the node exited with code {node.returncode}")
            state["complete"], state["studies"], state["srs"] = done(database, pacs, uids)
            return bool(state["complete"])

        complete = wait_until(all_done, max(0.0, deadline - send_s))
        total_s = time.monotonic() - t0
        if not complete:
            log(f"deadline of {deadline:.0f} s reached; reporting what arrived")
        quarantine = work / "node" / "store" / "quarantine"
        quarantined = sum(1 for p in quarantine.glob("*.dcm")) if quarantine.is_dir() else 0
    finally:
        sampler.stop()
        stop_node(node)
        pacs.stop()
    result = figures(
        args,
        plan,
        state["studies"],
        state["srs"],
        uids,
        send_s,
        total_s,
        complete,
        quarantined,
        sampler,
        baseline_rss,
    )
    result["machine"] = machine()
    result["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    result["batches"] = [
        {**{k: v for k, v in asdict(b).items() if k != "files"}, "files": len(b.files)}
        for sender in plan.batches
        for b in sender
    ]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--slices", type=int, default=50, help="axial slices per study")
    parser.add_argument("--size", type=int, default=64, help="pixels per side of each slice")
    parser.add_argument("--senders", type=int, default=4, help="concurrent storescu processes")
    parser.add_argument("--duplicates", type=float, default=0.05, help="share of files sent twice")
    parser.add_argument(
        "--split", type=float, default=0.25, help="share of studies sent by two senders"
    )
    parser.add_argument("--batch", type=int, default=3, help="studies per association")
    parser.add_argument("--quiet", type=float, default=3.0, help="TRIAGE_QUIET_SECONDS")
    parser.add_argument(
        "--deadline", type=float, default=0, help="seconds (default 300 + 10/study)"
    )
    parser.add_argument("--max-rss-mb", type=float, default=4096)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args(argv)
    missing = [t for t in ("storescu", "echoscu") if shutil.which(t) is None]
    if ORTHANC is None or missing:
        print(f"needs Orthanc and dcmtk; missing: {missing or ['Orthanc']}", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="triage-load-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        try:
            result = run(args, work)
        except RuntimeError as exc:
            log(f"load test could not run: {exc}; node log: {work / 'node.log'}")
            tail = (
                (work / "node.log").read_text(errors="replace")[-3000:]
                if (work / "node.log").exists()
                else ""
            )
            print(tail, file=sys.stderr)
            return 2
        print_summary(result)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1, default=str))
            log(f"figures written to {args.out}")
        failed = (
            result["lost"] > 0
            or result["instances"]["acknowledged"] != result["instances"]["sent"]
            or result["studies"]["not_analysed"] > 0
            or result["rss_mb"]["peak"] > args.max_rss_mb
        )
        return 1 if failed else 0
    finally:
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
