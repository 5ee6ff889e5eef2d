"""The load driver: open loop (request i is due at start + i / rate, whatever happened to the
earlier ones), over a few keep-alive connections, recording the status and answer time of every
request. bench/loadgen.py counts statuses but does not keep them per request, which the checks
need (which uuids got a 200; when each 5xx came), hence this small driver of its own.

Given several ports (the cluster's app nodes), it spreads the requests over them in turn and, as a
load balancer does, sends a request that met a connection error to the next node."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from chaos.traffic import Request

CONNECTION_ERROR = -1  # no answer: reset, refused, or cut off


@dataclass
class Outcome:
    kind: str
    status: int
    sent_at: float  # epoch seconds
    answered_at: float
    uuids: tuple[str, ...]


async def _exchange(host: str, port: int, conn, raw: bytes, timeout: float):
    """Send one request on conn (opening one if None); return (status, conn or None)."""
    for attempt in (1, 2):
        reused = conn is not None
        if conn is None:
            conn = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        reader, writer = conn
        try:
            writer.write(raw)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            lower = head.lower()
            start = lower.find(b"content-length:")
            length = int(lower[start + 15 : lower.find(b"\r\n", start)]) if start >= 0 else 0
            if length:
                await asyncio.wait_for(reader.readexactly(length), timeout)
            keep = b"connection: close" not in lower
            if not keep:
                writer.close()
            return int(head[9:12]), (conn if keep else None)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            writer.close()
            conn = None
            partial = getattr(exc, "partial", b"")
            if reused and attempt == 1 and not partial:
                continue  # the server had closed an idle keep-alive connection: send again once
            return CONNECTION_ERROR, None
        except (OSError, TimeoutError, ValueError, asyncio.LimitOverrunError):
            writer.close()
            return CONNECTION_ERROR, None
    return CONNECTION_ERROR, None


async def _balanced(host: str, ports: Sequence[int], first: int, idle: dict, raw: bytes, timeout: float) -> int:
    """Send on the node `first` picks; on a connection error, on each of the others in turn."""
    status = CONNECTION_ERROR
    for step in range(len(ports)):
        port = ports[(first + step) % len(ports)]
        conn = idle[port].pop() if idle[port] else None
        try:
            status, conn = await _exchange(host, port, conn, raw, timeout)
        except (OSError, TimeoutError):  # refused, or no connection within the timeout
            status, conn = CONNECTION_ERROR, None
        if conn is not None:
            idle[port].append(conn)
        if status != CONNECTION_ERROR:
            break
    return status


async def _run(
    host: str,
    ports: Sequence[int],
    requests: Iterator[Request],
    rate: float,
    stop: threading.Event,
    max_seconds: float,
    connections: int,
    on_outcome: Callable[[Outcome], None],
) -> None:
    idle: dict[int, list] = {port: [] for port in ports}
    slots = asyncio.Semaphore(connections)
    loop = asyncio.get_running_loop()
    offset = time.time() - loop.time()
    pending: set[asyncio.Task] = set()

    async def one(index: int, request: Request) -> None:
        async with slots:
            sent = loop.time()
            status = await _balanced(host, ports, index, idle, request.raw, timeout=30)
            on_outcome(Outcome(request.kind, status, offset + sent, offset + loop.time(), request.uuids))

    start = loop.time()
    for index, request in enumerate(requests):
        due = start + index / rate
        now = loop.time()
        if stop.is_set() or now - start > max_seconds:
            break
        if due > now:
            await asyncio.sleep(due - now)
        task = loop.create_task(one(index, request))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(set(pending), timeout=60)
    for _, writer in (conn for conns in idle.values() for conn in conns):
        writer.close()


def drive(
    host: str,
    ports: Sequence[int],
    requests: Iterator[Request],
    *,
    rate: float,
    stop: threading.Event,
    max_seconds: float,
    on_outcome: Callable[[Outcome], None],
    connections: int = 16,
) -> None:
    """Send `requests` at `rate` per second to the nodes at `ports` until `stop` is set or
    `max_seconds` pass; blocks."""
    asyncio.run(_run(host, ports, requests, rate, stop, max_seconds, connections, on_outcome))


def send_one(host: str, ports: Sequence[int], request: Request, timeout: float = 10) -> int:
    """One request on a connection of its own (the fault runner's probes), to the first node that
    takes it."""

    async def go() -> int:
        idle: dict[int, list] = {port: [] for port in ports}
        status = await _balanced(host, ports, 0, idle, request.raw, timeout)
        for _, writer in (conn for conns in idle.values() for conn in conns):
            writer.close()
        return status

    return asyncio.run(go())
