"""The one place where the test suite starts its real servers and workers.

Redis and ClickHouse always run; PostgreSQL runs when BKLOG_TEST_DATABASE=postgres (the default
database is SQLite, as for `make run`). They start before Django reads its settings, on free
loopback ports, with data in a temporary folder, and stop when the session ends.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from devservers import ClickHouseServer, PostgresServer, RedisServer
from devservers.cluster import ClusterStores

ROOT = Path(__file__).resolve().parent.parent
SERVERS: dict[str, object] = {}
TEST_CLICKHOUSE_DATABASE = "bklog_test"


def pytest_configure(config):
    if config.getoption("help", False) or config.getoption("version", 0):
        return
    base = Path(tempfile.mkdtemp(prefix="bklog-tests-"))
    SERVERS["base"] = base
    topology = os.environ.get("BKLOG_TEST_TOPOLOGY", "single")
    if topology == "cluster":
        # docs/operations.md#cluster-mode: ZooKeeper, 2 shards x 2 replicas of ClickHouse, a Redis
        # master and replica behind three Sentinels. The tests that kill or restart "the" Redis or
        # ClickHouse run on one server only (marked `single_node`); the fault suite's cluster form
        # does that to the cluster.
        cluster = ClusterStores(base / "cluster")
        cluster.start()
        SERVERS["cluster"] = cluster
        redis, clickhouse = cluster.redis_master, cluster.clickhouse[0].server
        os.environ.update(cluster.env())
    elif topology == "single":
        redis = RedisServer(base / "redis")
        redis.start()
        clickhouse = ClickHouseServer(base / "clickhouse")
        clickhouse.start()
        os.environ.update(
            {
                "REDIS_URL": redis.url,
                "CELERY_BROKER_URL": redis.url,
                "CLICKHOUSE_HOST": "127.0.0.1",
                "CLICKHOUSE_PORT": str(clickhouse.port),
            }
        )
    else:
        raise pytest.UsageError(f"BKLOG_TEST_TOPOLOGY must be single or cluster, not {topology!r}")
    SERVERS["redis"], SERVERS["clickhouse"] = redis, clickhouse

    database = os.environ.get("BKLOG_TEST_DATABASE", "sqlite")
    if database == "postgres":
        postgres = PostgresServer(base / "postgres")
        postgres.start()
        SERVERS["postgres"] = postgres
        os.environ["DATABASE_URL"] = postgres.database_url("bklog")
    elif database == "sqlite":
        os.environ["DATABASE_URL"] = f"sqlite:///{base / 'bklog.sqlite3'}"
    else:
        raise pytest.UsageError(f"BKLOG_TEST_DATABASE must be sqlite or postgres, not {database!r}")

    os.environ.update(
        {
            "BKLOG_VAR_DIR": str(base / "var"),
            "CLICKHOUSE_DATABASE": TEST_CLICKHOUSE_DATABASE,
            # Short enough that a test can watch a killed worker's messages come back.
            "CELERY_VISIBILITY_TIMEOUT": "20",
            "CELERY_UNACKED_RESTORE_INTERVAL": "2",
            "INGESTION_BATCH_SECONDS": "0.05",
            # The test client sends one request at a time: a linger would only make each wait.
            # tests/pipeline/test_coalesce.py covers coalescing, the fault suite runs the default.
            "CAPTURE_LINGER_MS": "0",
            "INGESTION_RETRY_MAX_SECONDS": "120",
            # Plugin retry schedules ten times shorter, plugin calls limited to 2 s: the retry,
            # dead-letter and time-limit tests then take seconds, not minutes.
            "PLUGIN_RETRY_DELAY_SCALE": "0.1",
            "PLUGIN_TIMEOUT_SECONDS": "2",
            # A test run waits for the session worker, which after a test that restarts Redis
            # finishes its task in hand before it takes new ones (Celery's reconnect): 20 s was
            # seen to run out there. The no-worker tests set their own short wait.
            "PLUGIN_TEST_RUN_WAIT_SECONDS": "60",
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
            "DJANGO_SETTINGS_MODULE": "bklog_app.settings",
        }
    )
    (base / "var").mkdir(exist_ok=True)
    from django.conf import settings

    settings.DATABASES  # noqa: B018 - load settings now, with the servers' addresses

    from pipeline.storage.migrate import migrate

    migrate(TEST_CLICKHOUSE_DATABASE, report=lambda _line: None)
    if "cluster" in SERVERS:  # capture's WAIT must be able to succeed before the first test
        SERVERS["cluster"].wait_until_writes_replicate(settings.REDIS_WAIT_TIMEOUT_MS)
    collect_static_files()
    flush_retries_a_deadlock()


def flush_retries_a_deadlock() -> None:
    """A transactional test ends with Django's `flush` (one TRUNCATE of every table). On
    PostgreSQL it can deadlock with the session's worker still ingesting what the test captured
    (its foreign-key checks take row locks on the same tables in another order), and PostgreSQL
    then aborts the TRUNCATE: the flush is run again, as an application retries a deadlock."""
    from django.core.management.base import CommandError
    from django.test import TransactionTestCase

    teardown = TransactionTestCase._fixture_teardown

    def _fixture_teardown(self) -> None:
        for attempt in range(5):
            try:
                return teardown(self)
            except CommandError as exc:
                if attempt == 4 or "deadlock detected" not in str(exc.__cause__):
                    raise
                time.sleep(0.2 * (attempt + 1))

    TransactionTestCase._fixture_teardown = _fixture_teardown


def collect_static_files() -> None:
    """STATIC_ROOT filled by `collectstatic`, as every deployment does it, before any test module
    loads the WSGI application (WhiteNoise lists STATIC_ROOT once, when its middleware starts).

    Pages link static files by the names in its manifest (one linking a file that is not there
    fails, as in production), and WhiteNoise serves them to the test client and to the processes
    the tests start, which share BKLOG_VAR_DIR and with it STATIC_ROOT.
    """
    import django
    from django.core.management import call_command

    django.setup()
    call_command("collectstatic", "--noinput", verbosity=0)


def pytest_collection_modifyitems(config, items):
    """In the cluster pass, tests that stop "the" Redis or ClickHouse server expect an outage that
    a cluster does not have (another replica answers); the fault suite's cluster form
    (python -m chaos --topology cluster) kills the cluster's servers instead."""
    if "cluster" not in SERVERS:
        return
    skip = pytest.mark.skip(reason="stops the one Redis or ClickHouse server: single-node topology only")
    for item in items:
        if item.get_closest_marker("single_node"):
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that ran real workers shows the end of their logs beside its own output:
    what a worker saw (a lost connection, a retry, a traceback) is most of what CI can tell."""
    report = yield
    if report.failed and report.when == "call":
        workers = [item.funcargs.get("celery_worker"), *getattr(item.funcargs.get("make_worker"), "started", [])]
        for worker in workers:
            if isinstance(worker, WorkerProcess) and worker.log.exists():
                report.sections.append((f"worker log {worker.log.name} (last 40 lines)", worker.tail(40)))
    return report


def pytest_sessionfinish(session, exitstatus):
    SERVERS["keep_logs"] = exitstatus not in (0, 5)


def pytest_unconfigure(config):
    report_server_faults()
    cluster = SERVERS.pop("cluster", None)
    if cluster is not None:
        cluster.stop()
        SERVERS.pop("redis", None), SERVERS.pop("clickhouse", None)
    for name in ("postgres", "clickhouse", "redis"):
        server = SERVERS.pop(name, None)
        if server is not None:
            server.stop()
    base = SERVERS.pop("base", None)
    if base is not None and SERVERS.get("keep_logs"):
        print(f"\nbklog tests: servers' data and worker logs kept in {base}")
    elif base is not None:
        shutil.rmtree(base, ignore_errors=True)


def report_server_faults() -> None:
    """A ClickHouse server that crashed during the session is said at its end, its logs kept: a
    test that then timed out waiting on it shows only the wait."""
    cluster = SERVERS.get("cluster")
    servers = [node.server for node in cluster.clickhouse] if cluster is not None else [SERVERS.get("clickhouse")]
    for server in servers:
        lines = server.fault_lines() if server is not None else []
        if lines:
            SERVERS["keep_logs"] = True
            print(f"\nbklog tests: ClickHouse at {server.data_dir} crashed:\n" + "\n".join(lines[:6]))


@pytest.fixture(scope="session")
def servers() -> dict:
    return SERVERS


@pytest.fixture
def own_redis(tmp_path):
    """A Redis server of the test's own, for tests that stop and start it."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def static_files() -> Path:
    """STATIC_ROOT, collected when the session started (collect_static_files)."""
    from django.conf import settings

    return Path(settings.STATIC_ROOT)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """pytest-django's, and before its teardown drops the test database, the project lookup
    threads' kept connections closed (pipeline/ingestion/token_rows.py)."""
    yield
    from pipeline.ingestion import token_rows

    token_rows.close_all()


@pytest.fixture(scope="session")
def test_database_url(django_db_setup) -> str:
    """The URL of the database the tests use, for processes started outside pytest."""
    from django.db import connection

    params = connection.settings_dict
    if params["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{params['NAME']}"
    return f"postgresql://{params['USER']}@{params['HOST']}:{params['PORT']}/{params['NAME']}"


def process_env(test_database_url: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": test_database_url, "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO", **extra}
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


class WorkerProcess:
    """A real Celery worker (prefork) run as `celery -A bklog_app worker --role ROLE`."""

    def __init__(self, env: dict[str, str], role: str | None = "all", concurrency: int = 1, log: Path | None = None):
        self.env, self.role, self.concurrency = env, role, concurrency
        logs = SERVERS["base"] / "logs"
        logs.mkdir(exist_ok=True)
        self.log = log or Path(tempfile.mkstemp(prefix=f"worker-{role or 'env'}-", suffix=".log", dir=logs)[1])
        self.process: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        command = [
            sys.executable, "-m", "celery", "-A", "bklog_app", "worker", *(["--role", self.role] if self.role else []),
            "--pool", "prefork", "--concurrency", str(self.concurrency), "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "--hostname", f"test-{self.role or 'env'}-{os.getpid()}-{time.monotonic_ns()}@%h",
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.tail()}")
            if b"ready." in self.log.read_bytes():
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the whole worker: main process and pool children, no chance to clean up."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def worker_env(test_database_url) -> dict[str, str]:
    return process_env(test_database_url)


@pytest.fixture(scope="session")
def celery_worker(worker_env):
    """One worker on every queue for the whole session."""
    worker = WorkerProcess(worker_env, role="all", concurrency=2).start()
    yield worker
    worker.stop()


@pytest.fixture
def make_worker(worker_env):
    """Start extra workers in a test; they are stopped (or were killed) at its end."""
    started: list[WorkerProcess] = []

    def start(role: str | None = "ingestion", concurrency: int = 1, **env: str) -> WorkerProcess:
        worker = WorkerProcess({**worker_env, **env}, role=role, concurrency=concurrency).start()
        started.append(worker)
        return worker

    start.started = started  # the failure report shows their logs (pytest_runtest_makereport)
    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def empty_ingestion_queue():
    """The capture tests read what was enqueued: start and end each with an empty ingestion queue."""
    from pipeline.queues import Queue
    from pipeline.redis import get_redis

    get_redis().delete(Queue.INGESTION.value)
    yield
    get_redis().delete(Queue.INGESTION.value)


@pytest.fixture
def project(db):
    from tests.factories import make_project

    return make_project()


@pytest.fixture
def api_client(project):
    from tests.factories import api_client_for

    return api_client_for(project.organization)
