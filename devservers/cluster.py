"""The cluster topology's stores on loopback: docs/operations.md#cluster-mode.

- ZooKeeper 3.8, one server: ClickHouse's replication and distributed DDL coordinate through it.
- ClickHouse 18.16, `shards` x `replicas` servers forming the cluster `bklog` (each server's
  `remote_servers`, `macros` and `zookeeper` in its `config.d/cluster.xml`).
- Redis 7: a master, one replica, and three Sentinels watching the master under the name `bklog`.

Every server is a `devservers.servers._Server`: a child of the Python process that starts it, its
files under its own data directory, stopped (or killed, as a crash) one at a time, restarted on
the same ports with the same data. `ClusterStores.env()` is what the app needs to use them.
"""

from __future__ import annotations

import itertools
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from devservers.servers import (
    LOOPBACK,
    REDIS_CONF,
    ClickHouseServer,
    RedisServer,
    ServerError,
    _Server,
    free_port,
)

CLUSTER_NAME = "bklog"
SENTINEL_MASTER = "bklog"
ZOOKEEPER_SERVER_SH = Path("/usr/share/zookeeper/bin/zkServer.sh")
ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")
SLF4J_SIMPLE = Path("/usr/share/java/slf4j-simple.jar")


def _redis_replies(port: int, *commands: tuple[str, ...]) -> list[bytes]:
    """The first line of the Redis server's reply to each of `commands`, sent on one connection
    (b"+OK", b":1", ...); fewer when it does not answer within a few seconds."""
    encoded = "".join(
        f"*{len(command)}\r\n" + "".join(f"${len(part)}\r\n{part}\r\n" for part in command) for command in commands
    )
    received = b""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
            sock.sendall(encoded.encode())
            while received.count(b"\r\n") < len(commands):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received += chunk
    except OSError:
        pass
    return received.split(b"\r\n")[: received.count(b"\r\n")]


def _four_letter_word(port: int, word: bytes, timeout: float = 1.0, *, whole: bool = False) -> bytes:
    """The server's first answer to `word`, or with `whole` all it sends before it closes (as
    ZooKeeper does after a four-letter word)."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(word)
            if not whole:
                return sock.recv(64)
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            return answer
    except OSError:
        return b""


class ZooKeeperServer(_Server):
    """ZooKeeper 3.8 (Debian's), standalone, with a small heap. Ready once `stat` shows its mode:
    `ruok` is answered `imok` while it still loads its data and refuses sessions, and a
    ClickHouse started then, with replicated tables to attach, exits (code 70)."""

    name = "zookeeper"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "zoo.cfg"

    def _prepare(self) -> None:
        super()._prepare()
        (self.data_dir / "data").mkdir(exist_ok=True)
        self.config_path.write_text(
            "tickTime=500\n"
            "initLimit=20\n"
            "syncLimit=10\n"
            f"dataDir={self.data_dir / 'data'}\n"
            f"clientPort={self._port}\n"
            f"clientPortAddress={LOOPBACK}\n"
            "maxClientCnxns=0\n"
            "admin.enableServer=false\n"
            "4lw.commands.whitelist=ruok,mntr,stat\n"
            "autopurge.purgeInterval=1\n"
        )

    def _command(self) -> list[str]:
        # zkServer.sh execs java, so the death signal and the stop signal reach the JVM itself.
        # Debian's classpath has no SLF4J binding, and ZooKeeper then logs nothing: with the
        # simple one (the JVM takes the last -cp), its warnings and errors reach zookeeper.log,
        # whose end a failed start shows.
        flags = "-Xms64m -Xmx256m -XX:+UseSerialGC"
        if SLF4J_SIMPLE.exists():
            flags += f" -cp /etc/zookeeper/conf:{ZOOKEEPER_JAR}:{SLF4J_SIMPLE}"
            flags += " -Dorg.slf4j.simpleLogger.defaultLogLevel=warn"
        return [
            "env",
            f"ZOO_LOG_DIR={self.data_dir}",
            f"JVMFLAGS={flags}",
            str(ZOOKEEPER_SERVER_SH),
            "start-foreground",
            str(self.config_path),
        ]

    def _answers(self) -> bool:
        return b"\nMode: " in _four_letter_word(self._port, b"stat", whole=True)


@dataclass(frozen=True)
class ClickHouseNode:
    shard: int  # 1-based
    replica: int  # 1-based
    server: ClickHouseServer
    interserver_port: int

    @property
    def name(self) -> str:
        return f"s{self.shard}r{self.replica}"


def clickhouse_cluster_xml(nodes: list[ClickHouseNode], me: ClickHouseNode, zookeeper_port: int) -> str:
    """`config.d/cluster.xml` for one server of the cluster: who the shards and replicas are,
    which one this server is (macros), where ZooKeeper is, and its replication port."""
    shards = sorted({node.shard for node in nodes})
    remote = "".join(
        "<shard><internal_replication>true</internal_replication>"
        + "".join(
            f"<replica><host>{LOOPBACK}</host><port>{node.server.port}</port></replica>"
            for node in nodes
            if node.shard == shard
        )
        + "</shard>"
        for shard in shards
    )
    return f"""<?xml version="1.0"?>
<!-- Written by devservers/cluster.py on every start: this server's place in the cluster. -->
<yandex>
    <interserver_http_host>{LOOPBACK}</interserver_http_host>
    <interserver_http_port>{me.interserver_port}</interserver_http_port>
    <zookeeper>
        <node><host>{LOOPBACK}</host><port>{zookeeper_port}</port></node>
        <session_timeout_ms>10000</session_timeout_ms>
    </zookeeper>
    <remote_servers><{CLUSTER_NAME}>{remote}</{CLUSTER_NAME}></remote_servers>
    <macros>
        <cluster>{CLUSTER_NAME}</cluster>
        <shard>{me.shard:02d}</shard>
        <replica>{me.name}</replica>
    </macros>
    <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
</yandex>
"""


class ClusterClickHouseServer(ClickHouseServer):
    """A ClickHouse server that also reads `config.d/cluster.xml` (set by `ClusterStores`)."""

    cluster_xml: str = ""

    def _prepare(self) -> None:
        super()._prepare()
        config_d = self.data_dir / "config.d"
        config_d.mkdir(exist_ok=True)
        (config_d / "cluster.xml").write_text(self.cluster_xml)


class ReplicatedRedisServer(RedisServer):
    """Redis with a config file of its own: Sentinel rewrites it (CONFIG REWRITE) when it makes
    this server a master or a replica, so the role survives a restart, as on a real host."""

    def __init__(self, data_dir: Path, port: int | None = None, replica_of: int | None = None) -> None:
        super().__init__(data_dir, port)
        self.replica_of = replica_of

    @property
    def config_path(self) -> Path:
        return self.data_dir / "redis.conf"

    def _prepare(self) -> None:
        super()._prepare()
        if not self.config_path.exists():
            text = REDIS_CONF.read_text() + f"\nport {self._port}\ndir {self.data_dir}\n"
            if self.replica_of is not None:
                text += f"replicaof {LOOPBACK} {self.replica_of}\n"
            self.config_path.write_text(text)

    def _command(self) -> list[str]:
        return ["redis-server", str(self.config_path)]


class SentinelServer(_Server):
    """A Redis Sentinel watching the master; it rewrites its own config as the cluster changes."""

    name = "sentinel"

    def __init__(self, data_dir: Path, master_port: int, port: int | None = None) -> None:
        super().__init__(data_dir, port)
        self.master_port = master_port

    @property
    def config_path(self) -> Path:
        return self.data_dir / "sentinel.conf"

    def _prepare(self) -> None:
        super()._prepare()
        if not self.config_path.exists():
            self.config_path.write_text(
                f"bind {LOOPBACK}\n"
                f"port {self._port}\n"
                f"dir {self.data_dir}\n"
                'logfile ""\n'
                f"sentinel monitor {SENTINEL_MASTER} {LOOPBACK} {self.master_port} 2\n"
                # Down after 2 s without an answer; a failover takes a few seconds more.
                f"sentinel down-after-milliseconds {SENTINEL_MASTER} 2000\n"
                f"sentinel failover-timeout {SENTINEL_MASTER} 10000\n"
                f"sentinel parallel-syncs {SENTINEL_MASTER} 1\n"
            )

    def _command(self) -> list[str]:
        return ["redis-sentinel", str(self.config_path)]

    def _answers(self) -> bool:
        return _four_letter_word(self._port, b"PING\r\n").startswith(b"+PONG")


@dataclass
class ClusterStores:
    """ZooKeeper, a `shards` x `replicas` ClickHouse cluster, Redis master + replica + 3 Sentinels.

    Ports are free ones picked now, or with `base_port` the same ones every time, counted up from
    it (a stack that outlives this process, as `make cluster`'s, is found again on them)."""

    base: Path
    shards: int = 2
    replicas: int = 2
    base_port: int | None = None
    zookeeper: ZooKeeperServer = field(init=False)
    clickhouse: list[ClickHouseNode] = field(init=False)
    redis_master: ReplicatedRedisServer = field(init=False)
    redis_replica: ReplicatedRedisServer = field(init=False)
    sentinels: list[SentinelServer] = field(init=False)

    def __post_init__(self) -> None:
        self.base = Path(self.base).absolute()
        self._lay_out()

    def _lay_out(self) -> None:
        """The servers, each with its ports chosen now: every server's config names the others'
        ports (ClickHouse's ZooKeeper and replicas, the Sentinels' master), so no server may pick
        new ones on its own when one is taken; `start` lays the whole cluster out again instead."""
        counted = itertools.count(self.base_port) if self.base_port is not None else None

        def port() -> int:
            return next(counted) if counted is not None else free_port()

        self.zookeeper = ZooKeeperServer(self.base / "zookeeper", port())
        self.clickhouse = [
            ClickHouseNode(
                shard,
                replica,
                ClusterClickHouseServer(self.base / f"clickhouse-s{shard}r{replica}", port(), port()),
                port(),
            )
            for shard in range(1, self.shards + 1)
            for replica in range(1, self.replicas + 1)
        ]
        for node in self.clickhouse:
            node.server.cluster_xml = clickhouse_cluster_xml(self.clickhouse, node, self.zookeeper.port)
        self.redis_master = ReplicatedRedisServer(self.base / "redis-1", port())
        self.redis_replica = ReplicatedRedisServer(self.base / "redis-2", port(), replica_of=self.redis_master.port)
        self.sentinels = [
            SentinelServer(self.base / f"sentinel-{i}", self.redis_master.port, port()) for i in (1, 2, 3)
        ]

    @property
    def servers(self) -> list[_Server]:
        return [
            self.zookeeper,
            *(node.server for node in self.clickhouse),
            self.redis_master,
            self.redis_replica,
            *self.sentinels,
        ]

    def start(self) -> None:
        """Start every server, in order. On a first start with ports picked here, a server that
        fails because another process took one of its ports meanwhile makes the whole cluster
        start again on new ports, its data removed (all of it is new)."""
        attempts = 3 if self.base_port is None and not any(s.start_seconds for s in self.servers) else 1
        for attempt in range(1, attempts + 1):
            try:
                for server in self.servers:
                    server.start()
                self.wait_until_writes_replicate(within_ms=1000)  # the replica's first sync is done
                return
            except ServerError:
                taken = any(server.ports_taken() for server in self.servers if not server.is_running())
                if attempt == attempts or not taken:
                    raise
                self.stop()
                self.remove_data()
                self._lay_out()

    def wait_until_writes_replicate(self, within_ms: int, timeout: float = 120.0) -> None:
        """Until a write to the master is confirmed by the replica within `within_ms`. `start`
        waits so (the replica's first sync is done); a caller that needs capture's WAIT to succeed
        within REDIS_WAIT_TIMEOUT_MS, a test session above all, waits again with that: just after
        the cluster starts and migrates, its servers' own start-up work can keep the replica from
        answering that fast."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # WAIT counts the replicas that have this connection's writes: one connection for both.
            write = ("SET", "bklog:probe:replication", "1")
            if _redis_replies(self.redis_master.port, write, ("WAIT", "1", str(within_ms))) == [b"+OK", b":1"]:
                return
            time.sleep(0.2)
        raise ServerError(
            f"the Redis replica on port {self.redis_replica.port} did not confirm a write within "
            f"{within_ms} ms for {timeout:g} s; see {self.redis_replica.data_dir}"
        )

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()

    def remove_data(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    def redis_url(self, db: int = 0) -> str:
        """The Sentinel form of REDIS_URL and CELERY_BROKER_URL that kombu and bklog read."""
        return ";".join(f"sentinel://{LOOPBACK}:{s.port}" for s in self.sentinels) + f"/{db}"

    def env(self) -> dict[str, str]:
        """Settings for an app node. Every node lists the ClickHouse servers in the same order
        (pipeline/storage/clickhouse.py's `cluster_settings` says why)."""
        first, *others = self.clickhouse
        return {
            "CLICKHOUSE_CLUSTER": CLUSTER_NAME,
            "CLICKHOUSE_HOST": LOOPBACK,
            "CLICKHOUSE_PORT": str(first.server.port),
            "CLICKHOUSE_ALT_HOSTS": ",".join(f"{LOOPBACK}:{node.server.port}" for node in others),
            "REDIS_URL": self.redis_url(),
            "CELERY_BROKER_URL": self.redis_url(),
            "REDIS_SENTINEL_MASTER": SENTINEL_MASTER,
            "REDIS_WAIT_REPLICAS": "1",
        }
