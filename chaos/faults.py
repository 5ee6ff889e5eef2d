"""The fault schedule and its runner. Each fault is injected, held, undone, and timed until the
stack has recovered: the program it hit is RUNNING again and a probe event sent after the fault
was answered 200 and is readable in ClickHouse (so the backlog built during the fault is through).

A SIGKILLed ingestion worker is timed a second way: from the kill until the last event of the
messages it held unacknowledged is stored (another worker gets them once they look abandoned,
past CELERY_VISIBILITY_TIMEOUT). The next fault waits for that."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import structlog

from bench.stack import LOOPBACK
from chaos.driver import send_one
from chaos.stack import (
    CLICKHOUSE_PROGRAM,
    POSTGRES_PROGRAM,
    REDIS_PROGRAM,
    WEB_PROGRAM,
    WORKER_PROGRAMS,
    ChaosStack,
)
from chaos.traffic import probe_request
from pipeline.ingestion.message import INGEST_QUEUE, INGEST_TASK_NAME, parts_of
from pipeline.ingestion.publish import message_body

logger = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Fault:
    name: str
    action: str  # kill_group, kill_web_worker, stop_start, restart
    program: str
    hold: float = 0.0  # seconds between stop and start
    outage: bool = False  # capture may answer 503 meanwhile (a store it needs is down)
    holds_ingestion: bool = False  # kills the only consumer of the ingestion queue: time its messages


@dataclass
class FaultResult:
    name: str
    started_at: float
    restored_at: float
    recovered_at: float | None
    probe_uuid: str | None
    outage: bool
    held_events: int | None = None  # events in the messages the killed worker held
    held_stored_at: float | None = None  # when the last of them was stored

    @property
    def recovery_seconds(self) -> float | None:
        return None if self.recovered_at is None else round(self.recovered_at - self.restored_at, 2)

    @property
    def held_recovery_seconds(self) -> float | None:
        """From the SIGKILL to the last event the killed worker held being stored."""
        return None if self.held_stored_at is None else round(self.held_stored_at - self.started_at, 2)


def schedule(mode: str) -> list[Fault]:
    """Worker kills first, so their unacknowledged messages come back while the rest runs."""
    redis_hold, clickhouse_hold = (10.0, 30.0) if mode == "full" else (3.0, 8.0)
    return [
        Fault("sigkill worker ingestion", "kill_group", WORKER_PROGRAMS["ingestion"], holds_ingestion=True),
        Fault("sigkill gunicorn worker", "kill_web_worker", WEB_PROGRAM),
        Fault("sigkill worker default", "kill_group", WORKER_PROGRAMS["default"]),
        Fault(f"redis stopped {redis_hold:g}s", "stop_start", REDIS_PROGRAM, redis_hold, outage=True),
        Fault("sigkill worker scheduled", "kill_group", WORKER_PROGRAMS["scheduled"]),
        Fault(f"clickhouse stopped {clickhouse_hold:g}s", "stop_start", CLICKHOUSE_PROGRAM, clickhouse_hold),
        Fault("sigkill worker async_export", "kill_group", WORKER_PROGRAMS["async_export"]),
        Fault("postgresql restarted", "restart", POSTGRES_PROGRAM, outage=True),
    ]


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def _leads_group(pgid: int) -> bool:
    """Whether the process that led this group still runs and still leads it."""
    try:
        return os.getpgid(pgid) == pgid
    except ProcessLookupError:
        return False


class FaultRunner:
    def __init__(
        self, stack: ChaosStack, project_id: int, token: str, gap: float, on_probe: Callable[[str], None]
    ) -> None:
        self.stack = stack
        self.project_id = project_id
        self.token = token
        self.gap = gap
        self.on_probe = on_probe  # a probe uuid answered 200: it joins the accepted set
        self.results: list[FaultResult] = []
        self.recovery_timeout = 300.0
        self._aimed_group: int | None = None  # a kill_group's target, found before the wait (`_aim`)

    def run(self, faults: list[Fault], stop: threading.Event, log=print) -> None:
        for fault in faults:
            if stop.is_set():
                return
            time.sleep(self.gap)
            log(f"  fault: {fault.name}")
            if fault.holds_ingestion:
                self._aim(fault)
                self._wait_holding()
            started = time.time()
            restored = self._inject(fault) or time.time()
            held = self._held_uuids() if fault.holds_ingestion else None
            probe_uuid, recovered = self._wait_recovered(fault)
            result = FaultResult(fault.name, started, restored, recovered, probe_uuid, fault.outage)
            self.results.append(result)
            took = "NOT RECOVERED" if recovered is None else f"recovered in {recovered - restored:.1f}s"
            log(f"  fault: {fault.name}: {took}")
            if held is not None:
                result.held_events = len(held)
                result.held_stored_at = self._wait_stored(held, started) if held else None
                took = result.held_recovery_seconds
                if not held:
                    stored = "nothing to wait for"
                else:
                    stored = "NOT ALL STORED" if took is None else f"all stored {took}s after the kill"
                log(f"  fault: {fault.name}: the worker held {len(held)} events, {stored}")

    # -- injection -------------------------------------------------------------------------

    def _pid(self, program: str) -> int:
        line = self.stack.ctl("status", program, check=False).stdout
        parts = line.split()
        if "RUNNING" not in parts:
            raise RuntimeError(f"{program} is not RUNNING before its fault: {line.strip()}")
        return int(parts[parts.index("pid") + 1].rstrip(","))

    def _inject(self, fault: Fault) -> float | None:
        """Inject the fault and undo it; returns when it was undone if that was before now."""
        if fault.action == "kill_group":
            # The Celery main process and its pool children: supervisord starts each program in a
            # process group of its own.
            group, self._aimed_group = self._aimed_group, None
            if group is None or not _leads_group(group):
                group = os.getpgid(self._pid(fault.program))
            os.killpg(group, signal.SIGKILL)
        elif fault.action == "kill_web_worker":
            workers = children(self._pid(fault.program))
            if not workers:
                raise RuntimeError("Gunicorn has no worker process to kill")
            os.kill(workers[0], signal.SIGKILL)
        elif fault.action == "stop_start":
            self.stack.ctl("stop", fault.program)
            time.sleep(fault.hold)
            self.stack.ctl("start", fault.program)
        elif fault.action == "restart":
            self.stack.ctl("restart", fault.program)
        else:
            raise ValueError(f"unknown fault action {fault.action!r}")
        return None

    def _aim(self, fault: Fault) -> None:
        """Find a kill_group's process group before waiting for the worker to hold events: asking
        supervisord takes longer than a batch holds its messages (50 ms and its run), and the
        kill after the wait must come at once or it finds them acknowledged and measures none."""
        if fault.action == "kill_group":
            self._aimed_group = os.getpgid(self._pid(fault.program))

    def _wait_holding(self, timeout: float = 120) -> None:
        """Until the ingestion worker holds some of the measured project's events: a worker still
        starting (the stack restarts every program before the load begins) holds none, and its
        kill would measure nothing."""
        deadline = time.monotonic() + timeout
        while not self._held_uuids() and time.monotonic() < deadline:
            time.sleep(0.02)

    def _unacked_messages(self) -> list[bytes]:
        return self.stack.redis().hvals("unacked")

    def _held_uuids(self) -> set[str]:
        """The measured project's events in the ingestion messages left unacknowledged in the
        broker, read right after the kill: the killed worker's, it being the queue's only
        consumer (kombu keeps {delivery tag: [message, exchange, routing key]} in `unacked`)."""
        uuids: set[str] = set()
        for value in self._unacked_messages():
            envelope, _exchange, routing_key = orjson.loads(value)
            if isinstance(envelope, str):
                envelope = orjson.loads(envelope)
            if routing_key != INGEST_QUEUE or envelope.get("headers", {}).get("task") != INGEST_TASK_NAME:
                continue  # not the killed worker's: another queue's (ingestion_overflow has its own)
            _args, kwargs, _embed = message_body(orjson.dumps(envelope))
            for part in parts_of(kwargs):
                if part.get("project_id") == self.project_id or part.get("token") == self.token:
                    uuids.update(str(event.get("uuid")) for event in part.get("events") or () if event.get("uuid"))
        return uuids

    def _wait_stored(self, uuids: set[str], since: float) -> float | None:
        """When the last of `uuids` was readable in ClickHouse, or None after recovery_timeout."""
        deadline = since + self.recovery_timeout
        wanted = sorted(uuids)
        while time.time() < deadline:
            try:
                stored = self.stack.clickhouse().execute(
                    "SELECT uniqExact(uuid) FROM events WHERE team_id = %(t)s AND uuid IN %(u)s",
                    {"t": self.project_id, "u": tuple(wanted)},
                )[0][0]
                if stored >= len(wanted):
                    return time.time()
            except Exception as exc:  # ClickHouse still coming back
                logger.debug("held events lookup failed", error=str(exc))
            time.sleep(0.5)
        return None

    # -- recovery --------------------------------------------------------------------------

    def _running(self, program: str) -> bool:
        return "RUNNING" in self.stack.ctl("status", program, check=False).stdout

    def _wait_recovered(self, fault: Fault) -> tuple[str | None, float | None]:
        deadline = time.monotonic() + self.recovery_timeout
        while not self._running(fault.program):
            if time.monotonic() > deadline:
                return None, None
            time.sleep(0.2)
        probe = probe_request(LOOPBACK, self.stack.web_ports[0], self.token, fault.name.replace(" ", "-"))
        while True:  # an SDK retries the same uuid until it gets a 200
            status = send_one(LOOPBACK, self.stack.web_ports, probe)
            if status == 200:
                break
            if time.monotonic() > deadline:
                return None, None
            time.sleep(0.2)
        uuid = probe.uuids[0]
        self.on_probe(uuid)
        while time.monotonic() < deadline:
            try:
                found = self.stack.clickhouse().execute(
                    "SELECT count() FROM events WHERE team_id = %(t)s AND uuid = toUUID(%(u)s)",
                    {"t": self.project_id, "u": uuid},
                )
                if found[0][0]:
                    return uuid, time.time()
            except Exception as exc:  # ClickHouse still coming back
                logger.debug("probe lookup failed", error=str(exc))
            time.sleep(0.25)
        return uuid, None
