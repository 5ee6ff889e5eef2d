"""Peak memory of a Celery worker exporting 1,000,000 events (issue 5: target < 200 MB).

    .venv/bin/python bench/export_memory.py [--events 1000000] [--format csv|jsonl|both]

Starts its own Redis and ClickHouse on loopback (devservers/) and a SQLite database in a
temporary folder, writes the events for one project straight into ClickHouse with columnar
INSERTs, then runs the export in a real worker process (`celery -A bklog_app worker --role
async_export --concurrency 1`) and samples the worker's processes from /proc while it runs.
The figure is VmHWM, the kernel's own peak resident set size of each process, so sampling gaps
cannot miss a peak. Prints the results and writes them to bench/results/export_memory.json.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "export_memory.json"
TARGET_MB = 200
INSERT_BATCH = 100_000
START = datetime(2024, 5, 1, tzinfo=UTC)
DAYS = 10


def start_servers(base: Path) -> tuple:
    from devservers import ClickHouseServer, RedisServer

    redis = RedisServer(base / "redis")
    redis.start()
    clickhouse = ClickHouseServer(base / "clickhouse")
    clickhouse.start()
    return redis, clickhouse


def configure(base: Path, redis, clickhouse) -> dict[str, str]:
    env = {
        "BKLOG_VAR_DIR": str(base / "var"),
        "DATABASE_URL": f"sqlite:///{base / 'bench.sqlite3'}",
        "REDIS_URL": redis.url,
        "CELERY_BROKER_URL": redis.url,
        "CLICKHOUSE_HOST": "127.0.0.1",
        "CLICKHOUSE_PORT": str(clickhouse.port),
        "CLICKHOUSE_DATABASE": "bklog_bench",
        "LOG_LEVEL": "INFO",
        "DJANGO_SETTINGS_MODULE": "bklog_app.settings",
        "PROMETHEUS_MULTIPROC_DIR": str(base / "prometheus"),
    }
    (base / "var").mkdir()
    (base / "prometheus").mkdir()
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    from pipeline.storage.migrate import migrate

    call_command("migrate", verbosity=0)
    migrate("bklog_bench", report=lambda _line: None)
    return {**os.environ, **env}


def make_events(project_id: int, count: int) -> float:
    """Columnar INSERTs of `count` events spread over DAYS days; returns the seconds it took."""
    from pipeline.storage.events import EventRow, insert_events

    rng = random.Random(5)
    names = ["$pageview", "$autocapture", "signed_up", "purchase", "$identify"]
    span_ms = DAYS * 86_400_000
    start_ms = int(START.timestamp() * 1000)
    started = time.perf_counter()
    for offset in range(0, count, INSERT_BATCH):
        rows = []
        for n in range(offset, min(offset + INSERT_BATCH, count)):
            ts = start_ms + rng.randrange(span_ms)
            rows.append(
                EventRow(
                    uuid=uuid.UUID(int=rng.getrandbits(128)),
                    team_id=project_id,
                    event=names[n % len(names)],
                    distinct_id=f"user-{rng.randrange(50_000)}",
                    properties={
                        "$current_url": f"https://example.com/products/{rng.randrange(10_000)}?ref=bench",
                        "$browser": rng.choice(["Chrome", "Firefox", "Safari"]),
                        "$os": rng.choice(["Mac OS X", "Windows", "Linux", "iOS"]),
                        "$screen_width": rng.choice([1280, 1440, 1920]),
                        "plan": rng.choice(["free", "pro", "enterprise"]),
                        "n": n,
                        "$lib": "posthog-js",
                        "$lib_version": "1.130.0",
                    },
                    timestamp_ms=ts,
                    created_at_ms=ts + 250,
                    person_id=uuid.UUID(int=rng.getrandbits(128)),
                    person_properties={"email": f"user{n % 50_000}@example.com", "name": "Bench User"},
                    elements_chain="",
                )
            )
        insert_events(rows)
    return time.perf_counter() - started


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "celery", "-A", "bklog_app", "worker", "--role", "async_export",
        "--pool", "prefork", "--concurrency", "1", "--loglevel", "INFO",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "--hostname", "bench-export@%h",
    ]  # fmt: skip
    with open(log, "ab") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while b"ready." not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    return process


def worker_pids(main_pid: int) -> list[int]:
    pids = [main_pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == main_pid:
                pids.append(int(entry.name))
    return pids


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) from /proc/<pid>/status, Pss from smaps_rollup: the process's
    proportional share of the pages it shares with its parent, so that a sum over the worker's
    processes does not count the forked pages twice."""
    values = {}
    for name, keys in (("status", ("VmRSS", "VmHWM")), ("smaps_rollup", ("Pss",))):
        try:
            for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in keys:
                    values[key] = int(rest.split()[0])
        except OSError:
            pass
    return values


def run_export(project, fmt: str, main_pid: int) -> dict:
    from bklog_app.exports.models import ExportJob, ExportStatus
    from pipeline.exports import files
    from pipeline.exports.tasks import run_file_export

    pool_pids = [pid for pid in worker_pids(main_pid) if pid != main_pid]
    baseline = {pid: memory_kb(pid).get("VmRSS", 0) for pid in [main_pid, *pool_pids]}
    job = ExportJob.objects.create(project=project, format=fmt, after=START, before=START + timedelta(days=DAYS))
    started = time.perf_counter()
    run_file_export.apply_async(args=[job.pk])
    peak_rss_sum = peak_pss_sum = 0
    peaks: dict[int, int] = {}
    by_progress: dict[int, int] = {}
    while True:
        pids = worker_pids(main_pid)
        samples = {pid: memory_kb(pid) for pid in pids}
        peak_rss_sum = max(peak_rss_sum, sum(s.get("VmRSS", 0) for s in samples.values()))
        peak_pss_sum = max(peak_pss_sum, sum(s.get("Pss", 0) for s in samples.values()))
        for pid, sample in samples.items():
            peaks[pid] = max(peaks.get(pid, 0), sample.get("VmHWM", 0))
        job.refresh_from_db()
        pool_rss = max((samples[p].get("VmRSS", 0) for p in pids if p != main_pid), default=0)
        by_progress.setdefault(job.progress // 10 * 10, pool_rss)
        if job.status not in (ExportStatus.QUEUED, ExportStatus.RUNNING):
            break
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    if job.status != ExportStatus.SUCCEEDED:
        raise RuntimeError(f"the export ended {job.status}: {job.error}")
    pool_peak = max((kb for pid, kb in peaks.items() if pid != main_pid), default=0)
    return {
        "format": fmt,
        "rows_exported": job.rows_exported,
        "file_bytes": files.path_for(job.file_name).stat().st_size,
        "seconds": round(seconds, 1),
        "rows_per_second": round(job.rows_exported / seconds),
        "runs": job.runs,
        "chunks": job.chunks_committed,
        "peak_rss_mb": {
            "pool_process": round(pool_peak / 1024, 1),
            "main_process": round(peaks.get(main_pid, 0) / 1024, 1),
            "worker_rss_sum_sampled": round(peak_rss_sum / 1024, 1),
            "worker_pss_sum_sampled": round(peak_pss_sum / 1024, 1),
        },
        "rss_before_mb": {str(pid): round(kb / 1024, 1) for pid, kb in baseline.items()},
        "pool_rss_mb_by_progress": {f"{k}%": round(v / 1024, 1) for k, v in sorted(by_progress.items())},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--format", choices=["csv", "jsonl", "both"], default="both")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (servers' data, logs)")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bklog-bench-export-"))
    redis, clickhouse = start_servers(base)
    worker = None
    try:
        env = configure(base, redis, clickhouse)
        from django.conf import settings

        from bklog_app.models import Organization, Project

        project = Project.objects.create(organization=Organization.objects.create(name="bench"), name="bench")
        insert_seconds = make_events(project.id, args.events)
        print(f"inserted {args.events:,} events in {insert_seconds:.1f} s", flush=True)
        worker = start_worker(env, base / "worker.log")
        formats = ["csv", "jsonl"] if args.format == "both" else [args.format]
        exports = []
        for fmt in formats:
            result = run_export(project, fmt, worker.pid)
            exports.append(result)
            print(json.dumps(result, indent=2), flush=True)
        worst = max(e["peak_rss_mb"]["pool_process"] for e in exports)
        worst_total = max(e["peak_rss_mb"]["worker_pss_sum_sampled"] for e in exports)
        report = {
            "what": "peak RSS of a Celery worker (prefork, concurrency 1) exporting stored events to a gzipped file",
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "events": args.events,
            "insert_seconds": round(insert_seconds, 1),
            "settings": {
                "EXPORT_CHUNK_ROWS": settings.EXPORT_CHUNK_ROWS,
                "EXPORT_GZIP_LEVEL": settings.EXPORT_GZIP_LEVEL,
            },
            "exports": exports,
            "target_mb": TARGET_MB,
            "peak_pool_process_mb": worst,
            "peak_worker_pss_total_mb": worst_total,
            "meets_target": worst < TARGET_MB and worst_total < TARGET_MB,
            "machine": {
                "cpus": os.cpu_count(),
                "python": sys.version.split()[0],
                # Times depend on what else runs; memory does not.
                "load_average_at_end": [round(x, 1) for x in os.getloadavg()],
            },
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        print(
            f"peak RSS of the process that ran the export: {worst} MB; the whole worker (main + pool, "
            f"PSS): {worst_total} MB (target < {TARGET_MB} MB) -> {RESULTS.relative_to(ROOT)}"
        )
        return 0 if report["meets_target"] else 1
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(30)
        clickhouse.stop()
        redis.stop()
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
