"""Scale-out benchmark: one receiver and 1, then 2, workers on real engines, in one run.

    .venv/bin/python benchmarks/scale_out.py [--studies 16] [--slices 40] [--size 256]
                                             [--senders 4] [--quiet 3] [--idle 3]
                                             [--out FILE.json]

What runs, all real and on 127.0.0.1: Orthanc with its default settings as the PACS, PostgreSQL
as the shared catalogue, SeaweedFS as the S3 store (minio client), a Prefect server
(`prefect server start`), and the node as separate processes: `triage serve --role receiver`
and `--role worker` (own TRIAGE_HOME each, TRIAGE_DEVICE=cpu). dcmtk storescu sends.

For each worker count (a fresh database and store prefix each): one warm-up study (excluded);
``--idle`` studies one at a time (the next once the previous SR is in the catalogue as
delivered): the idle latency; then ``--studies`` studies from ``--senders`` concurrent
storescu, one association per study: studies/hour (first send -> last SR delivered) and
latency p50/p95. Latency = the catalogue's last instance received -> the SR's outbox row
delivered. Prefect's share of a study's time = 1 - (time in the task bodies, ``work_s``) /
(the worker's whole flow call, ``run_s``), summed over the load's studies.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from sqlalchemy import select  # noqa: E402
from support.orthanc import Orthanc, free_port  # noqa: E402
from support.postgres import PostgreSQL  # noqa: E402
from support.prefect_server import PrefectServer  # noqa: E402
from support.seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedFS  # noqa: E402
from support.serve import ServeProcess  # noqa: E402

from triage.app.demo import DemoStudy, write_demo_studies  # noqa: E402
from triage.catalogue import Catalogue, Delivery, Study  # noqa: E402

BUCKET = "bench"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def start_role(role: str, home: Path, env: dict[str, str], ready: str) -> ServeProcess:
    """`triage serve --role ROLE`, once it says ``ready`` (a worker loads its models first)."""
    process = ServeProcess(home, env, ("--role", role))
    process.launch(lambda: process.said(ready), f"say {ready!r}", timeout=240)
    return process


def send(study: DemoStudy, port: int) -> None:
    done = subprocess.run(
        ["storescu", "-aet", "BENCH", "-aec", "TRIAGE", "+sd", "+r", "127.0.0.1", str(port)]
        + [str(study.folder)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    if done.returncode != 0:
        said = (done.stderr + done.stdout)[-2000:]
        raise RuntimeError(
            f"storescu exited {done.returncode} for {study.folder.name} (the receiver's "
            f"node.log says why it refused): {said}"
        )


def delivered(catalogue: Catalogue, uids: list[str]) -> dict[str, dict[str, Any]]:
    """Per study with its SR delivered: last instance, SR delivered, timings."""
    with catalogue.session() as s:
        rows = s.execute(
            select(
                Study.study_instance_uid,
                Study.last_instance_at,
                Study.timings,
                Study.worker,
                Delivery.delivered_at,
            )
            .join(Delivery, Delivery.study_id == Study.id)
            .where(
                Study.study_instance_uid.in_(uids),
                Delivery.kind == "sr",
                Delivery.delivered_at.is_not(None),
            )
        )
        return {
            uid: {
                "last_instance_at": last,
                "delivered_at": at,
                "timings": json.loads(t or "{}"),
                "worker": worker,
            }
            for uid, last, t, worker, at in rows
        }


def wait_delivered(catalogue: Catalogue, uids: list[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = delivered(catalogue, uids)
        if len(done) == len(uids):
            return done
        time.sleep(0.2)
    raise RuntimeError(f"only {len(delivered(catalogue, uids))} of {len(uids)} SRs delivered")


def latency(row: dict[str, Any]) -> float:
    return float((row["delivered_at"] - row["last_instance_at"]).total_seconds())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def one_configuration(
    workers: int, args: argparse.Namespace, work: Path, engines: dict[str, Any]
) -> dict[str, Any]:
    database = engines["postgres"].new_database()
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TRIAGE_", "PREFECT_"))},
        "TRIAGE_DATABASE_URL": database,
        "TRIAGE_STORE": f"s3://{BUCKET}/w{workers}",
        "TRIAGE_S3_ENDPOINT": engines["seaweedfs"].endpoint,
        "TRIAGE_S3_ACCESS_KEY": ACCESS_KEY,
        "TRIAGE_S3_SECRET_KEY": SECRET_KEY,
        "PREFECT_API_URL": engines["prefect"].api_url,
        "TRIAGE_PACS": engines["orthanc"].node,
        "TRIAGE_PORT": str(port),
        "TRIAGE_WEB_PORT": "off",
        "TRIAGE_QUIET_SECONDS": f"{args.quiet:g}",
        "TRIAGE_DEVICE": "cpu",
        "TRIAGE_LOG_LEVEL": "WARNING",
    }
    root = work / f"workers-{workers}"
    processes = [start_role("receiver", root / "receiver", env, "triage receiver")]
    catalogue = Catalogue(database)
    try:
        for n in range(workers):
            named = {**env, "TRIAGE_WORKER_NAME": f"w{n + 1}"}
            processes.append(start_role("worker", root / f"w{n + 1}", named, "triage worker"))
        shape = (args.size, args.size, args.slices)
        spacing = (230 / args.size, 230 / args.size, 5.0 * 40 / args.slices)
        studies = write_demo_studies(
            root / "studies",
            args.studies + args.idle + 1,
            unanalysable=0,
            shape=shape,
            spacing=spacing,
            seed=workers,
        )
        warm, idle, load = studies[0], studies[1 : 1 + args.idle], studies[1 + args.idle :]
        log(f"{workers} worker(s): warm-up study")
        send(warm, port)
        wait_delivered(catalogue, [warm.study_instance_uid], 300)
        idle_latency = []
        for study in idle:
            send(study, port)
            row = wait_delivered(catalogue, [study.study_instance_uid], 300)
            idle_latency.append(latency(row[study.study_instance_uid]))
        log(f"{workers} worker(s): {len(load)} studies from {args.senders} senders")
        started = datetime.utcnow()
        queue = list(load)
        lock = threading.Lock()

        def sender() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    study = queue.pop(0)
                send(study, port)

        threads = [threading.Thread(target=sender) for _ in range(args.senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        uids = [s.study_instance_uid for s in load]
        rows = wait_delivered(catalogue, uids, 60 * len(uids))
        last = max(r["delivered_at"] for r in rows.values())
        hours = (last - started).total_seconds() / 3600
        latencies = [latency(r) for r in rows.values()]
        run_s = sum(r["timings"].get("run_s", 0.0) for r in rows.values())
        work_s = sum(r["timings"].get("work_s", 0.0) for r in rows.values())
        by_worker: dict[str, int] = {}
        for r in rows.values():
            by_worker[r["worker"]] = by_worker.get(r["worker"], 0) + 1
        stages = sorted({k for r in rows.values() for k in r["timings"]})
        stages_p50 = {
            k: statistics.median(r["timings"][k] for r in rows.values() if k in r["timings"])
            for k in stages
        }
        sent = sum(sum(1 for f in s.folder.rglob("*") if f.is_file()) for s in load)
        catalogued = sum(catalogue.instance_count(uid) for uid in uids)
        return {
            "workers": workers,
            "studies": len(load),
            "studies_per_hour": len(load) / hours,
            "latency_p50_s": statistics.median(latencies),
            "latency_p95_s": percentile(latencies, 0.95),
            "idle_latency_p50_s": statistics.median(idle_latency),
            "idle_latencies_s": idle_latency,
            "prefect_share": 1 - work_s / run_s if run_s else None,
            "run_s_per_study": run_s / len(load),
            "studies_by_worker": by_worker,
            "stages_p50_s": stages_p50,
            "instances_sent": sent,
            "instances_catalogued": catalogued,
        }
    finally:
        catalogue.close()
        for process in reversed(processes):
            process.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=16)
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--quiet", type=float, default=3.0)
    parser.add_argument("--idle", type=int, default=3, help="studies sent one at a time")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="triage-scale-"))
    engines: dict[str, Any] = {}
    try:
        engines["orthanc"] = Orthanc(work / "orthanc", ae_title="PACS")
        engines["orthanc"].start(defaults=True)
        engines["postgres"] = PostgreSQL()
        engines["postgres"].start()
        # every study twice (one configuration each) and room to spare: full-size CTs fill
        # the tests' 8 x 64 MB, and a full SeaweedFS refuses writes (InternalError)
        megabytes = 2 * (args.studies + args.idle + 1) * args.slices * args.size**2 * 2 / 1e6
        engines["seaweedfs"] = SeaweedFS(
            work / "seaweedfs", volume_size_mb=256, volume_max=max(8, int(megabytes / 128) + 8)
        )
        engines["seaweedfs"].start()
        engines["seaweedfs"].client().make_bucket(BUCKET)
        engines["prefect"] = PrefectServer(work / "prefect")
        engines["prefect"].start()
        results = [one_configuration(n, args, work, engines) for n in (1, 2)]
    finally:
        for name in ("prefect", "seaweedfs", "postgres", "orthanc"):
            if name in engines:
                engines[name].remove() if name == "postgres" else engines[name].stop()
    one, two = results
    print("\n| workers | studies/h | p50 s | p95 s | idle p50 s | Prefect share | per worker |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        share = f"{100 * r['prefect_share']:.1f} %" if r["prefect_share"] is not None else "-"
        print(
            f"| {r['workers']} | {r['studies_per_hour']:.0f} | {r['latency_p50_s']:.1f} | "
            f"{r['latency_p95_s']:.1f} | {r['idle_latency_p50_s']:.1f} | {share} | "
            f"{r['studies_by_worker']} |"
        )
    print(f"\n2 workers / 1 worker: {two['studies_per_hour'] / one['studies_per_hour']:.2f}x")
    for r in results:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in r["stages_p50_s"].items())
        print(f"{r['workers']} worker(s), stage p50 (s): {stages}")
    best = max(results, key=lambda r: r["studies_per_hour"])
    print(f"\nagainst issue 14's goals ({best['workers']} worker(s), {args.slices}-slice studies):")
    goals = [
        ("studies/hour", best["studies_per_hour"], ">= 1000", best["studies_per_hour"] >= 1000),
        (
            "latency p50 (s)",
            best["latency_p50_s"],
            f"<= quiet + 10 = {args.quiet + 10:g}",
            best["latency_p50_s"] <= args.quiet + 10,
        ),
        (
            "Prefect share (%)",
            100 * (best["prefect_share"] or 0.0),
            "<= 5",
            (best["prefect_share"] or 0.0) <= 0.05,
        ),
        (
            "report, SR built and stored (s, p50)",
            best["stages_p50_s"].get("report_s", float("nan")),
            "<= 0.3",
            best["stages_p50_s"].get("report_s", 1.0) <= 0.3,
        ),
        (
            "instances lost",
            best["instances_sent"] - best["instances_catalogued"],
            "0",
            best["instances_sent"] == best["instances_catalogued"],
        ),
    ]
    for name, value, goal, met in goals:
        print(f"  {name}: {value:.2f} (goal {goal}): {'met' if met else 'NOT met'}")
    out = (
        args.out
        or ROOT / "benchmarks" / "results" / f"scale_out-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"args": vars(args) | {"out": str(out)}, "results": results}, indent=2)
    )
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
