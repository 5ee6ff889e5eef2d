"""The stack under test: the whole of `make run` (support-files/supervisord.conf) plus PostgreSQL,
with everything under var/bench/ and on ports of its own, so it runs beside a `make run` stack.

PostgreSQL is set up the way the tests set it up (devservers/servers.py: initdb as the `postgres`
user, trust auth on loopback, fsync off) but runs as one more supervisord program, dropped in
var/bench/supervisor/conf.d/, so the stack outlives one bench invocation and the next one
reuses it (`python -m bench --stop` ends it).

The stack's workers also register the bench-only naive task (BKLOG_BENCH_TASKS=1, read by
bklog_app/celery.py).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

import redis
from clickhouse_driver import Client
from supervisor.xmlrpc import SupervisorTransport

from devservers import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench"
LOOPBACK = "127.0.0.1"
DATABASE = "bklog"
APP_PROGRAMS = ("bklog-web", "bklog-workers:*", "bklog-beat")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Ports:
    """Not 8000 / 6379 / 9000 / 8123 / 5432: a `make run` stack may be up at the same time."""

    web: int = int(os.environ.get("BENCH_WEB_PORT", 18000))
    redis: int = int(os.environ.get("BENCH_REDIS_PORT", 16379))
    clickhouse: int = int(os.environ.get("BENCH_CLICKHOUSE_PORT", 19000))
    clickhouse_http: int = int(os.environ.get("BENCH_CLICKHOUSE_HTTP_PORT", 18123))
    postgres: int = int(os.environ.get("BENCH_POSTGRES_PORT", 15432))


class _SupervisedPostgres(PostgresServer):
    """devservers/servers.py's PostgreSQL preparation, with the server run by supervisord instead of by us."""

    log_dir: Path = VAR / "log"

    def prepare(self) -> None:
        self._prepare()

    def program(self) -> str:
        command = " ".join(["setpriv", *self._setpriv_options(), "--", *self._command()])
        return "\n".join(
            [
                "; Written by bench/stack.py: the bench stack's PostgreSQL.",
                "[program:bench-postgres]",
                f"command={command}",
                "autostart=true",
                "autorestart=true",
                "priority=5",
                "stopsignal=INT",
                "stopwaitsecs=30",
                f"stdout_logfile={self.log_dir / 'postgres.log'}",
                "redirect_stderr=true",
                "",
            ]
        )


class Stack:
    def __init__(self, ports: Ports | None = None, var: Path | None = None) -> None:
        """`var`: where data, logs and the supervisord socket go (default var/bench/); another
        folder and other ports make a second, independent stack (chaos/ uses var/chaos/)."""
        self.ports = ports or Ports()
        self.var = var or VAR
        self.started_here = False

    # -- environment ---------------------------------------------------------------------

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.ports.postgres}/{DATABASE}"

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.web}"

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("BKLOG_", "CLICKHOUSE_"))}
        env.update(
            {
                "BKLOG_HOME": str(ROOT),
                "BKLOG_VAR_DIR": str(self.var),
                "BKLOG_LOG_DIR": str(self.var / "log"),
                "BKLOG_LOCAL_STORES": "true",
                "BKLOG_REDIS_PORT": str(self.ports.redis),
                "BKLOG_CLICKHOUSE_PORT": str(self.ports.clickhouse),
                "BKLOG_CLICKHOUSE_HTTP_PORT": str(self.ports.clickhouse_http),
                "REDIS_URL": f"redis://{LOOPBACK}:{self.ports.redis}/0",
                "CELERY_BROKER_URL": f"redis://{LOOPBACK}:{self.ports.redis}/0",
                "CLICKHOUSE_HOST": LOOPBACK,
                "CLICKHOUSE_PORT": str(self.ports.clickhouse),
                "CLICKHOUSE_DATABASE": DATABASE,
                "DATABASE_URL": self.database_url,
                "PORT": str(self.ports.web),
                "CONSUL_ENABLED": "false",
                "PROMETHEUS_MULTIPROC_DIR": str(self.var / "prometheus"),
                "BKLOG_BENCH_TASKS": "1",
            }
        )
        env.pop("DJANGO_SETTINGS_MODULE", None)
        return env

    # -- life cycle ----------------------------------------------------------------------

    def is_running(self) -> bool:
        return self._ctl("pid", check=False).returncode == 0

    def ensure_running(self, log=print) -> None:
        """Start the stack unless this bench's supervisord already runs; then bring the schema up to
        date (idempotent) and wait until the web process answers."""
        if self.is_running():
            log(f"reusing the bench stack that runs under {self.var} (stop it with: python -m bench --stop)")
        else:
            log(f"starting the bench stack under supervisord (data and logs in {self.var})")
            (self.var / "log").mkdir(parents=True, exist_ok=True)
            conf_d = self.var / "supervisor" / "conf.d"
            conf_d.mkdir(parents=True, exist_ok=True)
            postgres = _SupervisedPostgres(self.var / "postgres", port=self.ports.postgres)
            postgres.log_dir = self.var / "log"
            postgres.prepare()
            (conf_d / "bench-postgres.conf").write_text(postgres.program())
            subprocess.run(["bash", str(ROOT / "support-files" / "run-supervisord.sh")], env=self.env(), check=True)
            self.started_here = True
        self._wait_for_stores()
        self._create_database()
        log("applying Django and ClickHouse migrations")
        self.manage("migrate", "--noinput")
        self.manage("migrate_clickhouse")
        if self.started_here:
            # The app programs started before the schema existed: start them again on it.
            self.restart_app(log)
        else:
            self._wait_for_web()

    def restart_app(self, log=print) -> None:
        log("restarting the web process, the workers and beat")
        self._ctl("restart", *APP_PROGRAMS)
        self._wait_for_web()

    def stop(self, log=print) -> None:
        if not self.is_running():
            log("the bench stack is not running")
            return
        log("stopping the bench stack")
        supervisord = self.programs().get("supervisord")
        self._ctl("shutdown")
        # supervisord stops answering at once but exits only once every program has stopped.
        deadline = time.monotonic() + 150
        while supervisord and Path(f"/proc/{supervisord}").exists() and time.monotonic() < deadline:
            time.sleep(0.3)

    def manage(self, *args: str) -> str:
        return run_manage(self.env(), *args)

    # -- clients -------------------------------------------------------------------------

    def clickhouse(self, database: str = DATABASE) -> Client:
        return Client(host=LOOPBACK, port=self.ports.clickhouse, database=database, connect_timeout=3)

    def redis(self) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=self.ports.redis, socket_timeout=5)

    def programs(self) -> dict[str, int]:
        """Running supervisord programs -> pid, plus supervisord itself.

        Asked over supervisord's socket from this process, not with `supervisorctl status`: the
        RSS sampler asks every few seconds while load runs, and a supervisorctl process costs
        about 150 ms of a core to start, which showed as a burst of 50-90 ms capture answers
        in whichever 10-second phase it landed.
        """
        programs = {}
        try:
            processes = self._supervisor().supervisor.getAllProcessInfo()
        except (OSError, xmlrpc.client.Error):  # not running, or going down
            processes = []
        for process in processes:
            if process["statename"] == "RUNNING":
                programs[process["name"]] = process["pid"]
        pid_file = self.var / "supervisor" / "supervisord.pid"
        if pid_file.exists():
            programs["supervisord"] = int(pid_file.read_text().strip())
        return programs

    def _supervisor(self) -> xmlrpc.client.ServerProxy:
        socket_url = f"unix://{self.var / 'supervisor' / 'supervisor.sock'}"
        return xmlrpc.client.ServerProxy("http://localhost", transport=SupervisorTransport(None, None, socket_url))

    def versions(self) -> dict[str, str]:
        out = {}
        try:
            out["clickhouse"] = self.clickhouse().execute("SELECT version()")[0][0]
        except Exception as exc:  # reported, not fatal: the figures matter more
            out["clickhouse"] = f"unknown ({exc})"
        try:
            out["redis"] = self.redis().info("server")["redis_version"]
        except Exception as exc:
            out["redis"] = f"unknown ({exc})"
        try:
            import psycopg

            with psycopg.connect(self._postgres_dsn("postgres"), connect_timeout=3) as conn:
                out["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
        except Exception as exc:
            out["postgresql"] = f"unknown ({exc})"
        return out

    # -- internals -----------------------------------------------------------------------

    def _ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(ROOT / "support-files" / "supervisorctl.sh"), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            check=check,
        )

    def _postgres_dsn(self, dbname: str) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.ports.postgres}/{dbname}"

    def _wait_for_stores(self, timeout: float = 90) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                # A plain connect first: clickhouse-driver logs a traceback for every refused one.
                socket.create_connection((LOOPBACK, self.ports.clickhouse), timeout=2).close()
                self.redis().ping()
                self.clickhouse("default").execute("SELECT 1")
                with psycopg.connect(self._postgres_dsn("postgres"), connect_timeout=2):
                    pass
                return
            except Exception as exc:  # still starting
                last = exc
                time.sleep(0.3)
        raise RuntimeError(
            f"Redis, ClickHouse or PostgreSQL of the bench stack did not answer within {timeout:.0f}s ({last}); "
            f"see {self.var / 'log'}"
        )

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(self._postgres_dsn("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                conn.execute(f"CREATE DATABASE {DATABASE}")

    def _wait_for_web(self, timeout: float = 90) -> None:
        if not answers_health(self.base_url, timeout):
            raise RuntimeError(
                f"the bench web process did not answer /_health within {timeout:.0f}s; see {self.var / 'log'}/web.log"
            )


def answers_health(base_url: str, timeout: float) -> bool:
    """Whether `<base_url>/_health` answers 200 within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with _NO_PROXY.open(f"{base_url}/_health", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def run_manage(env: dict[str, str], *args: str) -> str:
    """`manage.py <args>` with a stack's settings; its output, or RuntimeError with both streams."""
    completed = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{completed.stdout}\n{completed.stderr}")
    return completed.stdout


def api_request(stack: Stack, method: str, path: str, key: str, body: dict | None = None) -> dict:
    """Call the management API of the stack with a personal API key."""
    request = urllib.request.Request(
        stack.base_url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with _NO_PROXY.open(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{method} {path} answered {exc.code}: {exc.read()[:500]!r}") from None
