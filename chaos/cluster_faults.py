"""The cluster form's faults (`python -m chaos --topology cluster`), in turn under load through
both app nodes: a ClickHouse replica SIGKILLed and restarted, the Redis master SIGKILLed (Sentinel
promotes the replica; the old master comes back as its replica), and node a SIGKILLed whole (its
supervisord and every process below it) and started again.

Recovery is timed as for the single node (chaos/faults.py: the program runs again and a probe sent
after the fault is readable), and for a replica also until its replication queue is empty, so the
next fault does not meet a shard with one replica behind."""

from __future__ import annotations

import os
import signal
import time

import redis
import structlog

from chaos.faults import Fault, FaultRunner
from chaos.stack import ChaosClusterStack

logger = structlog.get_logger(__name__)

KILLED_REPLICA = 0  # s1r1: the server node a asks first, so its client fails over too


def cluster_schedule(mode: str, stack: ChaosClusterStack) -> list[Fault]:
    clickhouse_hold, node_hold = (30.0, 10.0) if mode == "full" else (8.0, 3.0)
    replica = stack.clickhouse_program(KILLED_REPLICA)
    return [
        Fault(
            f"clickhouse replica {replica} sigkilled, down {clickhouse_hold:g}s", "kill_store", replica, clickhouse_hold
        ),
        # Capture answers 503 until a replica confirms its push again (REDIS_WAIT_REPLICAS=1): from
        # the kill until the old master has come back as the new one's replica.
        Fault("redis master sigkilled, sentinel failover", "kill_redis_master", "redis", outage=True),
        Fault(f"node a sigkilled whole, down {node_hold:g}s", "kill_node", "a", node_hold, holds_ingestion=True),
    ]


class ClusterFaultRunner(FaultRunner):
    stack: ChaosClusterStack

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.details: dict[str, dict] = {}  # fault name -> what else was measured
        # At 1,000 events/s on 2 shared cores the cluster builds a backlog of minutes during a
        # fault; a probe, and node a's restored messages, wait their turn behind it.
        self.recovery_timeout = 600.0
        self._restored_at = 0.0
        self._killed_at = 0.0
        self._node_killed_at: float | None = None

    # -- injection -------------------------------------------------------------------------

    def _inject(self, fault: Fault) -> float | None:
        self._node_killed_at = None
        self._restored_at = self._inject_one(fault) or time.time()
        return self._restored_at

    def _inject_one(self, fault: Fault) -> float | None:
        if fault.action == "kill_store":
            self._kill_store(fault.program)
            time.sleep(fault.hold)
            self.stack.stores_ctl("start", fault.program)
        elif fault.action == "kill_redis_master":
            return self._kill_redis_master(fault)
        elif fault.action == "kill_node":
            killed = self._node_killed_at = time.time()
            processes = self.stack.kill_node(fault.program)
            time.sleep(fault.hold)
            self.stack.start_node(fault.program, log=lambda _message: None)
            self.stack.wait_for_web(fault.program)
            self.details[fault.name] = {
                "processes_killed": processes,
                "node_back_after_s": round(time.time() - killed, 2),
            }
        else:
            return super()._inject(fault)
        return None

    def _unacked_messages(self) -> list[bytes]:
        """After a node's kill, the messages its workers held: node b's workers hold theirs too, but
        score each afresh (unacked_index) every third of the visibility timeout and new ones at
        delivery, so by the time node a is back only the dead node's still carry a score from
        before the kill."""
        if self._node_killed_at is None:
            return super()._unacked_messages()
        client = self.stack.redis()
        tags = client.zrangebyscore("unacked_index", "-inf", self._node_killed_at)
        return [value for value in client.hmget("unacked", tags) if value is not None] if tags else []

    def _store_pid(self, program: str) -> int:
        line = self.stack.stores_ctl("status", program, check=False).stdout
        parts = line.split()
        if "RUNNING" not in parts:
            raise RuntimeError(f"{program} is not RUNNING before its fault: {line.strip()}")
        return int(parts[parts.index("pid") + 1].rstrip(","))

    def _kill_store(self, program: str) -> None:
        """SIGKILL the server's process group; its supervisord leaves it down (no autorestart)."""
        os.killpg(os.getpgid(self._store_pid(program)), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while self._running(program) and time.monotonic() < deadline:
            time.sleep(0.1)

    def _kill_redis_master(self, fault: Fault) -> float:
        """SIGKILL the master and keep it down until Sentinel has promoted the replica, then start
        it again (Sentinel makes it the new master's replica). Returns when the new master was
        promoted: recovery runs from there until capture is answered 200 again, which takes the
        old master back as a replica (capture WAITs for one)."""
        old_port = self.stack.redis_master_port()
        program = self.stack.redis_program(old_port)
        killed = time.time()
        self._kill_store(program)
        new_port = old_port
        deadline = time.monotonic() + 120
        while new_port == old_port and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                new_port = self.stack.redis_master_port()
            except redis.RedisError:  # the Sentinels see the master down and no new one yet
                continue
        promoted = time.time()
        self.stack.stores_ctl("start", program)
        self.details[fault.name] = {
            "killed_master": program,
            "new_master": self.stack.redis_program(new_port) if new_port != old_port else None,
            "failover_s": round(promoted - killed, 2) if new_port != old_port else None,
        }
        self._killed_at = killed
        return promoted

    def _wait_replica_online(self, deadline: float) -> float | None:
        while time.monotonic() < deadline:
            try:
                info = self.stack.redis().info("replication")
                if info.get("role") == "master" and any(
                    isinstance(value, dict) and value.get("state") == "online"
                    for key, value in info.items()
                    if key.startswith("slave")
                ):
                    return time.time()
            except redis.RedisError as exc:
                logger.debug("replication lookup failed", error=str(exc))
            time.sleep(0.2)
        return None

    # -- recovery --------------------------------------------------------------------------

    def _running(self, program: str) -> bool:
        if program == "redis":
            return True  # whichever Redis is master: the probe tells whether capture works
        if program in ("a", "b"):
            return self.stack.node_running(program)
        return "RUNNING" in self.stack.stores_ctl("status", program, check=False).stdout

    def _wait_recovered(self, fault: Fault) -> tuple[str | None, float | None]:
        if fault.action == "kill_redis_master":
            synced = self._wait_replica_online(time.monotonic() + self.recovery_timeout)
            self.details[fault.name]["old_master_replicating_after_s"] = (
                round(synced - self._killed_at, 2) if synced else None
            )
        probe_uuid, recovered = super()._wait_recovered(fault)
        if fault.action != "kill_store" or recovered is None:
            return probe_uuid, recovered
        caught_up = self._wait_replication(fault.program)
        self.details[fault.name] = {
            "probe_stored_after_s": round(recovered - self._restored_at, 2),
            "replication_queue_empty_after_s": round(caught_up - self._restored_at, 2) if caught_up else None,
        }
        return probe_uuid, (max(recovered, caught_up) if caught_up else None)

    def _wait_replication(self, program: str) -> float | None:
        """When the restarted replica has fetched every part its peers wrote meanwhile."""
        index = next(i for i in range(len(self.stack.stores.clickhouse)) if self.stack.clickhouse_program(i) == program)
        server = self.stack.stores.clickhouse[index].server
        deadline = time.monotonic() + self.recovery_timeout
        while time.monotonic() < deadline:
            try:
                client = self.stack.clickhouse_at(server.port)
                queue, readonly = client.execute(
                    "SELECT sum(queue_size), max(is_readonly) FROM system.replicas WHERE table = 'events_local'"
                )[0]
                if not queue and not readonly:
                    return time.time()
            except Exception as exc:  # still starting
                logger.debug("replication lookup failed", error=str(exc))
            time.sleep(0.5)
        return None
