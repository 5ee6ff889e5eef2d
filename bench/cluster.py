"""The cluster topology (docs/operations.md#cluster-mode) on this machine: what `make cluster`
starts, and what the fault suite (`python -m chaos --topology cluster`) and the bench's `cluster`
scenario run on, each in a folder and on ports of its own.

- The stores under one supervisord (`<var>/stores/`): devservers/cluster.py's ZooKeeper, 2 shards
  x 2 replicas of ClickHouse 18.16, Redis master + replica + 3 Sentinels, and PostgreSQL. Each
  server's files are prepared by its devservers class (`_prepare()`) and its `_command()` becomes a
  supervisord program, as bench/stack.py does for PostgreSQL: the stack outlives the process that
  started it, and supervisord restarts a server that dies.
- Two app nodes, `a` and `b`: each its own supervisord started with support-files/run-supervisord.sh,
  its own BKLOG_VAR_DIR (`<var>/node-a/`), web port and BKLOG_NODE_NAME, the same DATABASE_URL and
  the cluster's settings (`ClusterStores.env()`: both list the ClickHouse servers in the same
  order, so that a read sees what the other node just wrote); exports and local plugins are in
  folders both share, as they would be on a shared volume between hosts.

`python -m bench.cluster start|stop|status [--var DIR]` is `make cluster` / `make cluster-stop`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis
from clickhouse_driver import Client
from redis.sentinel import Sentinel

from bench.processes import children_by_parent
from bench.stack import DATABASE, LOOPBACK, ROOT, answers_health, api_request, run_manage
from devservers import PostgresServer
from devservers.cluster import SENTINEL_MASTER, ClusterStores
from devservers.servers import _Server

NODES = ("a", "b")
SUPERVISORD = ROOT / ".venv" / "bin" / "supervisord"
SUPERVISORCTL = ROOT / ".venv" / "bin" / "supervisorctl"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class ClusterPorts:
    """`stores`: the first of the stores' ports, counted up from it (18 of them)."""

    stores: int
    postgres: int
    web: tuple[int, int]  # node a, node b


# `make cluster`'s: beside `make run` (8000, 6379, 9000, 5432), the bench and the fault suite, and
# below the kernel's ephemeral ports (32768 and up), which any client's connection may be holding.
MAKE_CLUSTER_PORTS = ClusterPorts(stores=30100, postgres=30130, web=(8001, 8002))


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, children before grandchildren."""
    tree = children_by_parent()
    out, level = [], [pid]
    while level:
        level = [child for parent in level for child in tree.get(parent, [])]
        out += level
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class ClusterStack:
    def __init__(self, var: Path, ports: ClusterPorts, *, store_autorestart: bool = True) -> None:
        """`store_autorestart`: supervisord starts a store that died again (off for the fault
        suite, which restarts them itself)."""
        self.var = Path(var).absolute()
        self.ports = ports
        self.store_autorestart = store_autorestart
        self.stores = ClusterStores(self.var / "stores", base_port=ports.stores)
        self.postgres = PostgresServer(self.var / "stores" / "postgres", port=ports.postgres)
        self.started_here = False

    # -- where things are ----------------------------------------------------------------

    @property
    def stores_conf(self) -> Path:
        return self.var / "stores" / "supervisord.conf"

    @property
    def log_dir(self) -> Path:
        return self.var / "stores" / "log"

    @property
    def database_url(self) -> str:
        return self.postgres.database_url(DATABASE)

    @property
    def web_ports(self) -> tuple[int, int]:
        return self.ports.web

    def node_url(self, node: str) -> str:
        return f"http://{LOOPBACK}:{self.ports.web[NODES.index(node)]}"

    @property
    def base_url(self) -> str:
        """Node a's: where management calls go (any node answers them alike)."""
        return self.node_url(NODES[0])

    def node_env(self, node: str) -> dict[str, str]:
        index = NODES.index(node)
        var = self.var / f"node-{node}"
        env = {key: value for key, value in os.environ.items() if not key.startswith(("BKLOG_", "CLICKHOUSE_"))}
        for name in ("REDIS_URL", "CELERY_BROKER_URL", "DATABASE_URL", "DJANGO_SETTINGS_MODULE"):
            env.pop(name, None)
        env.update(
            {
                "BKLOG_HOME": str(ROOT),
                "BKLOG_VAR_DIR": str(var),
                "BKLOG_LOG_DIR": str(var / "log"),
                "BKLOG_NODE_NAME": node,
                "PROMETHEUS_MULTIPROC_DIR": str(var / "prometheus"),
                "PORT": str(self.ports.web[index]),
                "DATABASE_URL": self.database_url,
                "CLICKHOUSE_DATABASE": DATABASE,
                "CONSUL_ENABLED": "false",
                "EXPORTS_DIR": str(self.var / "exports"),
                "PLUGINS_DIR": str(self.var / "plugins"),
            }
        )
        env.update(self.stores.env())
        return env

    def env(self) -> dict[str, str]:
        """Node a's settings: what `manage.py` runs with."""
        return self.node_env(NODES[0])

    # -- clients -------------------------------------------------------------------------

    def clickhouse(self, database: str = DATABASE) -> Client:
        """A client of the first replica that answers: reads go through the Distributed `events`."""
        first, *others = [node.server.port for node in self.stores.clickhouse]
        return Client(
            host=LOOPBACK,
            port=first,
            alt_hosts=",".join(f"{LOOPBACK}:{port}" for port in others),
            database=database,
            connect_timeout=3,
        )

    def clickhouse_at(self, port: int, database: str = DATABASE) -> Client:
        """A client of that one server (its own `events_local`, `system.replicas`)."""
        return Client(host=LOOPBACK, port=port, database=database, connect_timeout=3)

    def sentinel(self) -> Sentinel:
        return Sentinel([(LOOPBACK, s.port) for s in self.stores.sentinels], socket_timeout=1, socket_connect_timeout=1)

    def redis(self) -> redis.Redis:
        """The current master, wherever Sentinel says it is."""
        return self.sentinel().master_for(SENTINEL_MASTER, socket_timeout=5)

    def redis_master_port(self) -> int:
        return int(self.sentinel().discover_master(SENTINEL_MASTER)[1])

    def redis_program(self, port: int) -> str:
        server = next(s for s in (self.stores.redis_master, self.stores.redis_replica) if s.port == port)
        return server.data_dir.name

    def clickhouse_program(self, index: int) -> str:
        return self.stores.clickhouse[index].server.data_dir.name

    # -- life cycle ----------------------------------------------------------------------

    def stores_running(self) -> bool:
        return self.stores_ctl("pid", check=False).returncode == 0

    def node_running(self, node: str) -> bool:
        return self.node_ctl(node, "pid", check=False).returncode == 0

    def is_running(self) -> bool:
        return self.stores_running()

    def ensure_running(self, log=print) -> None:
        """Start what is not running (stores, then the nodes once the schemas are there); safe to
        call again on a running stack."""
        if self.stores_running():
            log(f"reusing the cluster's stores under {self.var / 'stores'}")
        else:
            log(f"starting the cluster's stores under supervisord (data and logs in {self.var / 'stores'})")
            self._write_stores_conf()
            subprocess.run([str(SUPERVISORD), "-c", str(self.stores_conf)], check=True, cwd=ROOT)
            self.started_here = True
            self._wait_for([self.stores.zookeeper])
            # check=False: a server that exits while ZooKeeper settles is started again by
            # supervisord (startretries); the wait below is what decides.
            self.stores_ctl("start", *(node.server.data_dir.name for node in self.stores.clickhouse), check=False)
        self._wait_for_stores()
        self._create_database()
        log("applying Django migrations (PostgreSQL) and ClickHouse migrations (ON CLUSTER)")
        self.manage("migrate", "--noinput")
        self.manage("migrate_clickhouse")
        for node in NODES:
            self.start_node(node, log)
        for node in NODES:
            self.wait_for_web(node)

    def start_node(self, node: str, log=print) -> None:
        if self.node_running(node):
            log(f"node {node}: supervisord already running; keeping it")
            return
        log(f"node {node}: starting supervisord on port {self.ports.web[NODES.index(node)]}")
        subprocess.run(
            ["bash", str(ROOT / "support-files" / "run-supervisord.sh")], env=self.node_env(node), check=True
        )

    def kill_node(self, node: str) -> int:
        """SIGKILL the node's supervisord and every process below it at once, as a host that dies;
        returns how many processes were killed."""
        pid = self.node_supervisord_pid(node)
        if pid is None:
            raise RuntimeError(f"node {node} has no supervisord running")
        os.kill(pid, signal.SIGSTOP)  # no restarts, no new children while the tree is read
        tree = [pid, *descendants(pid)]
        for each in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGSTOP)
        tree = [pid, *descendants(pid)]
        for each in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(_alive(each) for each in tree) and time.monotonic() < deadline:
            time.sleep(0.1)
        return len(tree)

    def node_supervisord_pid(self, node: str) -> int | None:
        path = self.var / f"node-{node}" / "supervisor" / "supervisord.pid"
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def stop(self, log=print) -> None:
        """Both nodes (their workers finish their tasks), then the stores."""
        for node in NODES:
            if self.node_running(node):
                log(f"node {node}: stopping")
                self._shutdown(self.node_supervisord_pid(node), lambda n=node: self.node_ctl(n, "shutdown"))
        if self.stores_running():
            log("stopping the cluster's stores")
            pid_file = self.var / "stores" / "supervisord.pid"
            pid = int(pid_file.read_text().strip()) if pid_file.exists() else None
            self._shutdown(pid, lambda: self.stores_ctl("shutdown"))
        if not any(self.node_running(n) for n in NODES) and not self.stores_running():
            log("the cluster is stopped")

    def _shutdown(self, pid: int | None, shutdown) -> None:
        shutdown()
        # supervisord stops answering at once but exits only once every program has stopped.
        deadline = time.monotonic() + 150
        while pid and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.3)

    def manage(self, *args: str) -> str:
        return run_manage(self.env(), *args)

    def stores_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(SUPERVISORCTL), "-c", str(self.stores_conf), *args],
            capture_output=True,
            text=True,
            check=check,
        )

    def node_ctl(self, node: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(ROOT / "support-files" / "supervisorctl.sh"), *args],
            env=self.node_env(node),
            capture_output=True,
            text=True,
            check=check,
        )

    def programs(self) -> dict[str, int]:
        """Running programs of every supervisord -> pid: `<program>@<node>` for the nodes'."""
        out = {}
        for line in self.stores_ctl("status", check=False).stdout.splitlines():
            parts = line.split()
            if len(parts) > 3 and parts[1] == "RUNNING":
                out[parts[0]] = int(parts[3].rstrip(","))
        for node in NODES:
            for line in self.node_ctl(node, "status", check=False).stdout.splitlines():
                parts = line.split()
                if len(parts) > 3 and parts[1] == "RUNNING":
                    out[f"{parts[0].split(':')[-1]}@{node}"] = int(parts[3].rstrip(","))
        return out

    def versions(self) -> dict[str, str]:
        out = {"topology": f"{self.stores.shards} shards x {self.stores.replicas} replicas, 2 app nodes"}
        try:
            out["clickhouse"] = self.clickhouse().execute("SELECT version()")[0][0]
        except Exception as exc:  # reported, not fatal
            out["clickhouse"] = f"unknown ({exc})"
        try:
            out["redis"] = self.redis().info("server")["redis_version"]
        except Exception as exc:
            out["redis"] = f"unknown ({exc})"
        return out

    # -- internals -----------------------------------------------------------------------

    def _program(
        self, server: _Server, name: str, priority: int, cpu_policy: str | None = None, autostart: bool = True
    ) -> str:
        server._prepare()
        command = server._command()
        if server._setpriv_options():
            command = ["setpriv", *server._setpriv_options(), "--", *command]
        if cpu_policy:
            command = ["chrt", f"--{cpu_policy}", "0", *command]
        return "\n".join(
            [
                f"[program:{name}]",
                f"command={shlex.join(command)}",
                f"directory={server.data_dir}",
                f"autostart={str(autostart).lower()}",
                f"autorestart={str(self.store_autorestart).lower()}",
                f"priority={priority}",
                "startsecs=1",
                "startretries=20",
                f"stopsignal={server.stop_signal.name.removeprefix('SIG')}",
                "stopwaitsecs=60",
                "stopasgroup=true",
                "killasgroup=true",
                f"stdout_logfile={self.log_dir / (name + '.log')}",
                "stdout_logfile_maxbytes=20MB",
                "stdout_logfile_backups=2",
                "redirect_stderr=true",
                "",
            ]
        )

    def _write_stores_conf(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stores = self.var / "stores"
        # ClickHouse's inserts and merges are batch work, as under `make run`
        # (support-files/supervisord.local-stores.conf): the same CPU policy as the workers.
        policy = os.environ.get("BKLOG_WORKER_CPU_POLICY", "idle")
        programs = [self._program(self.stores.zookeeper, "zookeeper", 1)]
        programs += [self._program(self.postgres, "postgres", 5)]
        # ClickHouse gives up on a ZooKeeper that does not answer yet: started once it does.
        programs += [
            self._program(n.server, n.server.data_dir.name, 10, policy, autostart=False) for n in self.stores.clickhouse
        ]
        programs += [
            self._program(s, s.data_dir.name, 10) for s in (self.stores.redis_master, self.stores.redis_replica)
        ]
        programs += [self._program(s, s.data_dir.name, 20) for s in self.stores.sentinels]
        self.stores_conf.write_text(
            "\n".join(
                [
                    "; Written by bench/cluster.py on every start: the cluster topology's stores.",
                    "[unix_http_server]",
                    f"file={stores / 'supervisor.sock'}",
                    "chmod=0700",
                    "[supervisord]",
                    f"logfile={self.log_dir / 'supervisord.log'}",
                    f"pidfile={stores / 'supervisord.pid'}",
                    f"childlogdir={self.log_dir}",
                    "minfds=4096",
                    f"directory={stores}",
                    "[rpcinterface:supervisor]",
                    "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
                    "[supervisorctl]",
                    f"serverurl=unix://{stores / 'supervisor.sock'}",
                    "",
                    *programs,
                ]
            )
        )

    def _wait_for_stores(self, timeout: float = 120) -> None:
        self._wait_for([*self.stores.servers, self.postgres], timeout)

    def _wait_for(self, servers: list[_Server], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        waiting: list[str] = []
        while time.monotonic() < deadline:
            waiting = [s.data_dir.name for s in servers if not s._answers()]
            if not waiting:
                try:
                    self.redis().ping()  # Sentinel knows the master
                    return
                except redis.RedisError as exc:
                    waiting = [f"the Sentinels' master ({exc})"]
            time.sleep(0.3)
        raise RuntimeError(f"the cluster's stores did not answer within {timeout:.0f}s: {waiting}; see {self.log_dir}")

    def _create_database(self) -> None:
        with psycopg.connect(self.postgres.database_url("postgres"), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
                conn.execute(f"CREATE DATABASE {DATABASE}")

    def wait_for_web(self, node: str, timeout: float = 120) -> None:
        if answers_health(self.node_url(node), timeout):
            return
        raise RuntimeError(
            f"node {node}'s web process did not answer /_health within {timeout:.0f}s; "
            f"see {self.var / f'node-{node}' / 'log' / 'web.log'}"
        )


def port_is_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((LOOPBACK, port)) == 0


def _demo(stack: ClusterStack) -> None:
    """The demo project and key, and where to send events: `make cluster`'s last words."""
    project = json.loads(stack.manage("create_project", "demo", "--org", "Demo", "--get-or-create", "--json"))
    key = json.loads(stack.manage("create_api_key", "demo", "--org", "Demo", "--json"))["key"]
    first, second = (stack.node_url(node) for node in NODES)
    clickhouse = ", ".join(f"{LOOPBACK}:{node.server.port} ({node.name})" for node in stack.stores.clickhouse)
    sentinels = ", ".join(f"{LOOPBACK}:{s.port}" for s in stack.stores.sentinels)
    api_request(stack, "GET", f"/api/projects/{project['id']}/", key)  # the key works on the cluster
    print(
        f"""
bklog is running as a cluster (docs/operations.md#cluster-mode).

  Send events to:   {first}   (node a)
               or:  {second}   (node b)   PostHog-compatible: /batch/, /e/, /capture/, ...
  Project token:    {project["token"]}   (project id {project["id"]})
  API key (demo):   {key}
  Admin:            {first}/admin/

  ClickHouse:       {clickhouse}; cluster `bklog`, table `events` (Distributed)
  Redis Sentinels:  {sentinels}; master name `{SENTINEL_MASTER}`
  PostgreSQL:       {stack.database_url}
  Data and logs:    {stack.var}  (node-a/log, node-b/log, stores/log)

Send an event to either node:
  curl -s {second}/e/ -H 'Content-Type: application/json' \\
    -d '{{"api_key": "{project["token"]}", "event": "hello", "distinct_id": "user-1"}}'

Read it back from the other:
  curl -s -H 'Authorization: Bearer {key}' '{first}/api/projects/{project["id"]}/events/?limit=5'

Stop everything: make cluster-stop
"""
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description="make cluster / make cluster-stop")
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("--var", type=Path, default=ROOT / "var" / "cluster")
    args = parser.parse_args(argv)
    stack = ClusterStack(args.var, MAKE_CLUSTER_PORTS)

    def log(message: str) -> None:
        print(f"make cluster: {message}", flush=True)

    if args.action == "stop":
        stack.stop(log)
        return 0
    if args.action == "status":
        print(stack.stores_ctl("status", check=False).stdout, end="")
        for node in NODES:
            print(f"-- node {node}")
            print(stack.node_ctl(node, "status", check=False).stdout, end="")
        return 0
    if not stack.stores_running():
        taken = [p for p in (*stack.web_ports, stack.ports.postgres, stack.ports.stores) if port_is_taken(p)]
        if taken:
            log(f"ports {taken} are taken by another program; stop it (or `make cluster-stop`) first")
            return 1
    stack.ensure_running(log)
    _demo(stack)
    return 0


if __name__ == "__main__":
    sys.exit(main())
