"""The load generator: pre-built HTTP/1.1 requests over keep-alive connections, asyncio streams.

It runs in a process of its own (`run_in_subprocess`) so that its CPU is its own and can be
reported: on a 2-core machine it competes with the server, so it does as little as possible per
request (the bytes of every request are built before the clock starts; a response is read as
its header block and Content-Length bytes).

Two modes:
- open loop (`rate`): request i is due at start + i / rate whatever happened to earlier ones,
  and its latency runs from that due time, so a server that falls behind shows it in the
  latency (no coordinated omission); at most `connections` are open, a due request waits for one.
- closed loop (`rate` None): `connections` clients each send their next request as soon as the
  previous one was answered, as fast as the server goes.

Both are bounded: by the number of requests and by `max_seconds`, after which whatever is still
in flight is counted as unfinished. Progress goes to stderr once a second.

    python -m bench.loadgen < spec.json > result.json
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.stats import latency_summary

_LENGTH = struct.Struct("!I")


@dataclass
class LoadSpec:
    host: str
    port: int
    requests_path: str  # written by write_requests
    rate: float | None = None  # requests/s (open loop); None: closed loop
    connections: int = 32
    max_seconds: float = 60.0
    label: str = "load"
    record_answer_times: bool = False
    progress: bool = True


@dataclass
class LoadResult:
    label: str
    offered_rps: float | None
    requests: int
    sent: int = 0
    completed: int = 0
    ok: int = 0
    errors: int = 0  # connection errors (no response)
    unfinished: int = 0  # still in flight at max_seconds, or never sent
    retries: int = 0  # a reused keep-alive connection the server had closed or reset: sent again once
    statuses: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    achieved_rps: float = 0.0
    cpu_s: float = 0.0
    cpu_percent: float = 0.0  # of one core, for the generator process
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    latencies_ms: list[float] = field(default_factory=list)  # of the 2xx answers
    answered_at: list[float | None] = field(default_factory=list)  # epoch seconds per request, 2xx only
    started_at: float = 0.0  # epoch seconds of the first due time


def build_post(host: str, port: int, path: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode("ascii") + body


def write_requests(path: Path, requests) -> int:
    count = 0
    with open(path, "wb") as out:
        for request in requests:
            out.write(_LENGTH.pack(len(request)))
            out.write(request)
            count += 1
    return count


def read_requests(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    out, offset = [], 0
    while offset < len(data):
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        out.append(data[offset : offset + length])
        offset += length
    return out


class _StaleConnection(Exception):
    """The server closed a reused keep-alive connection before answering."""


def _dropped(conn) -> bool:
    """The server closed (or reset) this idle keep-alive connection."""
    reader, writer = conn
    return writer.transport.is_closing() or reader.at_eof() or reader.exception() is not None


class _Pool:
    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port, self.limit = host, port, limit
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.open = 0
        self.waiters: list[asyncio.Future] = []

    async def acquire(self):
        while self.idle:
            conn = self.idle.pop()
            if not _dropped(conn):
                return conn, True
            self.open -= 1  # closed by the server while idle (as HTTP clients' pools check)
            conn[1].close()
        if self.open >= self.limit:
            future = asyncio.get_running_loop().create_future()
            self.waiters.append(future)
            conn = await future
            if conn is not None:
                return conn, True
        self.open += 1
        try:
            return await asyncio.open_connection(self.host, self.port), False
        except BaseException:
            self.open -= 1
            self._wake_for_new()
            raise

    def release(self, conn) -> None:
        while self.waiters:
            future = self.waiters.pop(0)
            if not future.done():
                future.set_result(conn)
                return
        self.idle.append(conn)

    def discard(self, conn) -> None:
        self.open -= 1
        conn[1].close()
        self._wake_for_new()

    def _wake_for_new(self) -> None:
        while self.waiters:
            future = self.waiters.pop(0)
            if not future.done():
                future.set_result(None)  # the waiter opens a connection of its own
                return

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


class _Run:
    def __init__(self, spec: LoadSpec, requests: list[bytes]) -> None:
        self.spec = spec
        self.requests = requests
        self.pool = _Pool(spec.host, spec.port, spec.connections)
        self.result = LoadResult(label=spec.label, offered_rps=spec.rate, requests=len(requests))
        self.statuses: Counter[int] = Counter()
        self.latencies: list[float] = []
        self.answered: list[float | None] = [None] * len(requests) if spec.record_answer_times else []
        self.loop = asyncio.get_running_loop()
        self.wall_offset = time.time() - self.loop.time()

    async def one(self, index: int, due: float) -> None:
        request = self.requests[index]
        for attempt in (1, 2):
            conn, reused = await self.pool.acquire()
            reader, writer = conn
            try:
                writer.write(request)
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    if reused and not exc.partial:
                        raise _StaleConnection from None
                    raise
                except ConnectionError:
                    # Reset before any answer on a reused connection: the server closed it idle
                    # (keep-alive timeout) as the request went out; HTTP clients send again.
                    if reused:
                        raise _StaleConnection from None
                    raise
                lower = head.lower()
                start = lower.find(b"content-length:")
                length = int(lower[start + 15 : lower.find(b"\r\n", start)]) if start >= 0 else 0
                if length:
                    await reader.readexactly(length)
            except _StaleConnection:
                self.pool.discard(conn)
                if attempt == 1:
                    self.result.retries += 1
                    continue
                self.result.errors += 1
                return
            except (OSError, asyncio.IncompleteReadError, ValueError, asyncio.LimitOverrunError):
                self.pool.discard(conn)
                self.result.errors += 1
                return
            now = self.loop.time()
            if b"connection: close" in lower:
                self.pool.discard(conn)
            else:
                self.pool.release(conn)
            status = int(head[9:12])
            self.statuses[status] += 1
            self.result.completed += 1
            if 200 <= status < 300:
                self.result.ok += 1
                self.latencies.append((now - due) * 1000)
                if self.answered:
                    self.answered[index] = self.wall_offset + now
            return

    async def open_loop(self, start: float, deadline: float) -> None:
        rate = self.spec.rate
        pending: set[asyncio.Task] = set()
        for index in range(len(self.requests)):
            due = start + index / rate
            now = self.loop.time()
            if now >= deadline:
                break
            await asyncio.sleep(due - now if due > now else 0)
            task = self.loop.create_task(self.one(index, due))
            pending.add(task)
            task.add_done_callback(pending.discard)
            self.result.sent += 1
        if pending:
            await asyncio.wait(set(pending), timeout=max(deadline - self.loop.time(), 0.01))
        for task in list(pending):
            task.cancel()

    async def closed_loop(self, deadline: float) -> None:
        next_index = iter(range(len(self.requests)))

        async def client() -> None:
            for index in next_index:
                if self.loop.time() >= deadline:
                    return
                self.result.sent += 1
                await self.one(index, self.loop.time())

        clients = [self.loop.create_task(client()) for _ in range(self.spec.connections)]
        _, pending = await asyncio.wait(clients, timeout=max(deadline - self.loop.time(), 0.01))
        for task in pending:
            task.cancel()

    async def progress(self, start: float) -> None:
        last_done, last_time = 0, start
        while True:
            await asyncio.sleep(1.0)
            now = self.loop.time()
            done = self.result.completed
            print(
                f"  [{self.spec.label}] {now - start:5.1f}s sent {self.result.sent}/{len(self.requests)} "
                f"answered {done} ({(done - last_done) / (now - last_time):.0f}/s) "
                f"2xx {self.result.ok} errors {self.result.errors}",
                file=sys.stderr,
                flush=True,
            )
            last_done, last_time = done, now


async def _run(spec: LoadSpec, requests: list[bytes]) -> LoadResult:
    run = _Run(spec, requests)
    loop = run.loop
    cpu0 = _cpu_seconds()
    start = loop.time() + 0.02
    deadline = start + spec.max_seconds
    reporter = loop.create_task(run.progress(start)) if spec.progress else None
    try:
        if spec.rate:
            await run.open_loop(start, deadline)
        else:
            await run.closed_loop(deadline)
    finally:
        if reporter:
            reporter.cancel()
        run.pool.close()
    end = loop.time()
    result = run.result
    result.wall_s = round(end - start, 3)
    result.cpu_s = round(_cpu_seconds() - cpu0, 3)
    result.cpu_percent = round(100 * result.cpu_s / max(result.wall_s, 1e-9), 1)
    result.unfinished = len(requests) - result.completed - result.errors
    result.statuses = {str(code): n for code, n in sorted(run.statuses.items())}
    result.achieved_rps = round(result.ok / max(result.wall_s, 1e-9), 1)
    result.latencies_ms = [round(v, 3) for v in run.latencies]
    result.answered_at = run.answered
    result.started_at = run.wall_offset + start
    for key, value in latency_summary(run.latencies).items():
        setattr(result, key, value)
    return result


def run(spec: LoadSpec) -> LoadResult:
    """Run in this process (the harness uses run_in_subprocess)."""
    return asyncio.run(_run(spec, read_requests(Path(spec.requests_path))))


def run_in_subprocess(spec: LoadSpec) -> LoadResult:
    """Run in a fresh Python process: its CPU time is its own, the caller's threads don't interfere."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.loadgen"],
        input=json.dumps(asdict(spec)).encode(),
        stdout=subprocess.PIPE,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=spec.max_seconds + 60,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the load generator exited with code {completed.returncode}; its stderr is above")
    data = json.loads(completed.stdout)
    return LoadResult(**data)


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def main() -> None:
    spec = LoadSpec(**json.loads(sys.stdin.buffer.read()))
    result = run(spec)
    sys.stdout.write(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
