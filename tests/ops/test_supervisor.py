"""The shipped support-files/supervisord.conf under a real supervisord (docs/contracts.md#operations).

One supervisord runs Gunicorn, one Celery worker per queue and beat against the test session's
Redis, ClickHouse and database (BKLOG_LOCAL_STORES=false, as in production). It is driven with
support-files/supervisorctl.sh, the way an operator does.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import pytest

from bench.stack import Stack
from devservers import free_port
from tests.conftest import process_env
from tests.factories import wait_for_events
from tests.ops.processes import BIN, ROOT, http_get, http_post, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

APP_PROGRAMS = {
    "bklog-web",
    "bklog-workers:bklog-worker-ingestion",
    "bklog-workers:bklog-worker-ingestion-overflow",
    "bklog-workers:bklog-worker-default",
    "bklog-workers:bklog-worker-scheduled",
    "bklog-workers:bklog-worker-async-export",
    "bklog-beat",
}


class Supervisor:
    def __init__(self, env: dict[str, str]):
        self.env = env
        self.var_dir = Path(env["BKLOG_VAR_DIR"])

    def ctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(ROOT / "support-files/supervisorctl.sh"), *args],
            env=self.env, capture_output=True, text=True, timeout=120, check=check,
        )  # fmt: skip

    def start(self) -> None:
        subprocess.run(["bash", str(ROOT / "support-files/run-supervisord.sh")], env=self.env, check=True, timeout=30)

    def status(self) -> dict[str, tuple[str, int | None]]:
        programs = {}
        for line in self.ctl("status").stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                pid = re.search(r"pid (\d+)", line)
                programs[parts[0]] = (parts[1], int(pid.group(1)) if pid else None)
        return programs

    def wait_all_running(self, timeout: float = 90) -> dict:
        def all_running():
            status = self.status()
            return status if all(status.get(name, ("",))[0] == "RUNNING" for name in APP_PROGRAMS) else None

        return wait_until(all_running, timeout, "program set RUNNING", self.logs)

    def logs(self) -> str:
        status = self.ctl("status").stdout
        tails = []
        for log in sorted((self.var_dir / "log").glob("*.log")):
            tails.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
        return status + "\n".join(tails)

    def shutdown(self) -> None:
        pid_file = self.var_dir / "supervisor" / "supervisord.pid"
        pid = int(pid_file.read_text()) if pid_file.exists() else None
        self.ctl("shutdown")
        if pid is None:
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def supervisor(test_database_url, servers):
    var_dir = Path(tempfile.mkdtemp(prefix="bklog-sv-"))  # short: a unix socket path lives in it
    broker = servers["redis"].url[:-1] + "13"  # a Redis database of its own: no other worker consumes
    env = process_env(
        test_database_url,
        BKLOG_VAR_DIR=str(var_dir),
        BKLOG_BIN=str(BIN),
        BKLOG_LOCAL_STORES="false",
        REDIS_URL=broker,
        CELERY_BROKER_URL=broker,
        PORT=str(free_port()),
        GUNICORN_WORKERS="1",
        BKLOG_INGESTION_CONCURRENCY="1",
        BKLOG_DEFAULT_CONCURRENCY="1",
        BKLOG_WORKER_STOPWAITSECS="30",
        CONSUL_ENABLED="false",
        CELERY_VISIBILITY_TIMEOUT="10",
        # The SIGKILL below often lands while the worker handles the message just captured,
        # between kombu's BRPOP and its unacked bookkeeping; the capture journal brings that one
        # back (pipeline/ingestion/journal.py), here within seconds instead of 90.
        INGESTION_JOURNAL_GRACE_SECONDS="5",
        INGESTION_JOURNAL_SWEEP_SECONDS="5",
        LOG_LEVEL="INFO",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the supervisord tree gets its own, under its var dir
    sv = Supervisor(env)
    sv.start()
    try:
        yield sv
    finally:
        sv.shutdown()
        shutil.rmtree(var_dir, ignore_errors=True)


def send(url: str, token: str, events: list[dict]) -> None:
    status, body = http_post(f"{url}/batch/", orjson.dumps({"api_key": token, "batch": events}))
    assert status == 200, body


def make_events(count: int, prefix: str) -> list[dict]:
    return [{"event": f"{prefix}-{n}", "distinct_id": "u1", "uuid": str(uuid.uuid4())} for n in range(count)]


def test_supervisor_runs_restarts_and_respawns_without_losing_events(supervisor, project):
    status = supervisor.wait_all_running()
    assert set(status) == APP_PROGRAMS  # no dev-only store programs when BKLOG_LOCAL_STORES=false
    url = f"http://127.0.0.1:{supervisor.env['PORT']}"
    wait_until(lambda: http_get(f"{url}/_health")[0] == 200, 60, "answer on /_health", supervisor.logs)
    for log in ("web.log", "worker-ingestion.log", "worker-default.log", "worker-scheduled.log",
                "worker-async-export.log", "beat.log"):  # fmt: skip
        assert (supervisor.var_dir / "log" / log).exists(), log
    # Batch work runs on the CPU the web process leaves (BKLOG_WORKER_CPU_POLICY=idle); the web
    # process keeps the default policy.
    for name, (_, pid) in status.items():
        policy = os.sched_getscheduler(pid)
        assert policy == (os.SCHED_OTHER if name == "bklog-web" else os.SCHED_IDLE), (name, policy)

    # The bench harness reads the same table over supervisord's socket, in-process (bench/stack.py).
    supervisord_pid = int((supervisor.var_dir / "supervisor" / "supervisord.pid").read_text())
    expected = {name.split(":")[-1]: pid for name, (_, pid) in status.items()} | {"supervisord": supervisord_pid}
    assert Stack(var=supervisor.var_dir).programs() == expected

    # Everyday operation: restart every worker at once.
    old_pids = {name: pid for name, (_, pid) in status.items() if name.startswith("bklog-workers:")}
    restart = supervisor.ctl("restart", "bklog-workers:*")
    assert restart.returncode == 0, restart.stdout + restart.stderr
    status = supervisor.wait_all_running()
    assert all(status[name][1] != pid for name, pid in old_pids.items())

    # SIGKILL the ingestion worker (its whole process group) while events arrive.
    name = "bklog-workers:bklog-worker-ingestion"
    killed_pid = status[name][1]
    sent = make_events(20, "before")
    send(url, project.api_token, sent)
    os.killpg(killed_pid, signal.SIGKILL)
    during = make_events(20, "during")
    send(url, project.api_token, during)  # the web tier accepts them while no worker runs
    sent += during

    def respawned():
        state, pid = supervisor.status().get(name, ("", None))
        return state == "RUNNING" and pid != killed_pid

    wait_until(respawned, 60, "respawned ingestion worker", supervisor.logs)
    rows = wait_for_events(project.id, len(sent), timeout=90)
    assert sorted(row["uuid"] for row in rows) == sorted(event["uuid"] for event in sent), supervisor.logs()

    # One /metrics covers the web process and every worker of the tree.
    _, body = http_get(f"{url}/metrics")
    ingested = re.search(rb"^bklog_events_ingested_total (\S+)$", body, re.M)
    assert ingested and float(ingested.group(1)) >= len(sent), body[:2000]
