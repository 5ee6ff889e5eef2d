"""The load generator: pre-built HTTP/1.1 requests over keep-alive connections, one epoll loop.

It runs in a process of its own (`run_in_subprocess`) so that its CPU is its own and can be
reported: on a 2-core machine it competes with the server, so it does as little as possible per
request. The bytes of every request are built before the clock starts; the engine is one loop
over `select.epoll` and non-blocking sockets (Linux), with no event-loop machinery between a
socket and the counts: sending a request is one `send` on a free connection, its answer is one
`recv` (more if it comes in pieces) parsed as a header block (status line, Content-Length) and
Content-Length bytes, and the open-loop schedule is the poll's timeout.

Two modes:
- open loop (`rate`): request i is due at start + i / rate whatever happened to earlier ones,
  and its latency runs from that due time, so a server that falls behind shows it in the
  latency (no coordinated omission); at most `connections` are open, a due request waits for one
  (first come, first served) and the wait counts in its latency. The connections are opened
  before the clock starts, as a keep-alive client's pool is open in its steady state: the run
  measures requests, not 64 TCP handshakes in its first milliseconds (a connection the server
  closes later is opened again on demand, and that wait counts).
- closed loop (`rate` None): `connections` clients each send their next request as soon as the
  previous one was answered, as fast as the server goes.

Both are bounded: by the number of requests and by `max_seconds`, after which whatever is still
in flight is counted as unfinished. Progress goes to stderr once a second.

Keep-alive connections the server closed are handled as HTTP clients' pools do: an idle one is
dropped, and a request whose reused connection is closed or reset before any byte of its answer
arrived is sent once more on a fresh connection (`retries`); any other failure is an error.

    python -m bench.loadgen < spec.json > result.json
"""

from __future__ import annotations

import errno
import json
import math
import os
import select
import socket
import struct
import subprocess
import sys
import time
from collections import Counter, deque
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


def _client_options(sock: socket.socket) -> None:
    """Every connection of the pool: non-blocking, and each request sent at once (no Nagle)."""
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Connection:
    """One keep-alive connection (a non-blocking socket) and the request in flight on it."""

    __slots__ = (
        "answer_end",
        "buffer",
        "close_after",
        "closed",
        "connecting",
        "due",
        "fd",
        "index",
        "reused",
        "sock",
        "status",
        "unsent",
    )

    def __init__(self, sock: socket.socket, index: int, due: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.connecting = True
        self.closed = False  # by the server, after a `Connection: close` answer, or at the end of the run
        self.index = index  # the request in flight, -1 while idle
        self.due = due
        self.reused = False
        self.unsent = b""  # the rest of a request the socket's buffer could not take at once
        self.buffer = bytearray()  # the answer so far
        self.answer_end = 0  # the answer's length, once its header block is complete
        self.status = 0
        self.close_after = False

    def read_head(self, end: int) -> None:
        """Status, Content-Length and `Connection: close` from the header block ending at `end`
        (ValueError if malformed)."""
        head = self.buffer[: end + 2].lower()  # header names are case-insensitive
        start = head.find(b"\r\ncontent-length:")
        length = int(head[start + 17 : head.find(b"\r\n", start + 17)]) if start >= 0 else 0
        self.status = int(self.buffer[9:12])
        self.close_after = b"\r\nconnection: close" in head
        self.answer_end = end + 4 + length


class _Run:
    """One run: the loop, the schedule, the pool of connections (at most `spec.connections`, open
    or connecting), the requests waiting for one, and the counts."""

    def __init__(self, spec: LoadSpec, requests: list[bytes]) -> None:
        self.spec = spec
        self.requests = requests
        self.result = LoadResult(label=spec.label, offered_rps=spec.rate, requests=len(requests))
        self.statuses: Counter[int] = Counter()
        self.latencies: list[float] = []
        self.answer_times: list[float | None] = [None] * len(requests) if spec.record_answer_times else []
        self.family, _, _, _, self.address = socket.getaddrinfo(spec.host, spec.port, type=socket.SOCK_STREAM)[0]
        self.epoll = select.epoll()
        self.connections: dict[int, _Connection] = {}  # by file descriptor: open or connecting
        self.idle: list[_Connection] = []  # open with nothing in flight, the last used on top
        self.waiting: deque[tuple[int, float]] = deque()  # (index, due) of due requests with no connection
        self.failed: list[_Connection] = []  # failed outside the poll (connect, send): handled next turn
        self.closing: list[socket.socket] = []  # closed after the turn, so no fd is reused within one
        self.next_index = 0  # the next request to send
        self.wall_offset = time.time() - time.monotonic()
        self.start = self.deadline = 0.0  # set when the clock starts (`run`)

    # -- the loop

    def run(self) -> float:
        """Until everything is answered or the deadline passes; returns when it stopped."""
        spec, result, count = self.spec, self.result, len(self.requests)
        connections, poll, failed = self.connections, self.epoll.poll, self.failed
        if spec.rate:
            self.open_pool()
        self.start = time.monotonic() + 0.02
        self.deadline = self.start + spec.max_seconds
        wake_at = self.start
        report_at, last_done, last_time = (self.start + 1.0 if spec.progress else math.inf), 0, self.start
        try:
            while True:
                for sock in self.closing:
                    sock.close()
                self.closing.clear()
                while failed:
                    self.lost(failed.pop())
                now = time.monotonic()
                if now >= self.deadline:
                    return now
                if now >= wake_at:
                    wake_at = self.send_due(now) if spec.rate else self.start_clients(now)
                if self.next_index == count and result.completed + result.errors == result.sent:
                    return now
                if now >= report_at:
                    self.report(now, last_done, last_time)
                    report_at, last_done, last_time = report_at + 1.0, result.completed, now
                timeout = 0 if failed else min(wake_at, report_at, self.deadline) - now
                for fd, events in poll(max(timeout, 0)):
                    connection = connections.get(fd)
                    if connection is None:
                        continue  # closed earlier in this turn
                    if connection.connecting:
                        self.on_connected(connection)
                        continue
                    if events & select.EPOLLOUT:
                        self.flush(connection)
                    if events & ~select.EPOLLOUT:
                        self.read(connection)
        finally:
            for connection in connections.values():
                connection.sock.close()
            for sock in self.closing:
                sock.close()
            self.epoll.close()

    def send_due(self, now: float) -> float:
        """Open loop: send every request whose due time has passed (a late wake-up loses none);
        returns when the next one is due."""
        rate, start, count = self.spec.rate, self.start, len(self.requests)
        while self.next_index < count:
            due = start + self.next_index / rate
            if due > now:
                return due
            self.send_next(due)
        return math.inf

    def start_clients(self, now: float) -> float:
        """Closed loop: each client sends its first request; request_done sends the next ones."""
        for _ in range(min(self.spec.connections, len(self.requests))):
            self.send_next(now)
        return math.inf

    def report(self, now: float, last_done: int, last_time: float) -> None:
        result = self.result
        print(
            f"  [{self.spec.label}] {now - self.start:5.1f}s sent {result.sent}/{len(self.requests)} "
            f"answered {result.completed} ({(result.completed - last_done) / (now - last_time):.0f}/s) "
            f"2xx {result.ok} errors {result.errors}",
            file=sys.stderr,
            flush=True,
        )

    # -- requests

    def send_next(self, due: float) -> None:
        index = self.next_index
        self.next_index += 1
        self.result.sent += 1
        if self.idle:
            self.send(self.idle.pop(), index, due)
        elif len(self.connections) < self.spec.connections:
            self.connect(index, due)
        else:
            self.waiting.append((index, due))

    def send(self, connection: _Connection, index: int, due: float, reused: bool = True) -> None:
        connection.index, connection.due, connection.reused = index, due, reused
        request = self.requests[index]
        try:
            sent = connection.sock.send(request)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.failed.append(connection)
            return
        if sent < len(request):
            connection.unsent = memoryview(request)[sent:]
            self.epoll.modify(connection.fd, select.EPOLLIN | select.EPOLLOUT)

    def flush(self, connection: _Connection) -> None:
        """The socket takes more of a request it could not take at once."""
        try:
            sent = connection.sock.send(connection.unsent)
        except BlockingIOError:
            return
        except OSError:
            self.failed.append(connection)
            return
        connection.unsent = connection.unsent[sent:]
        if not connection.unsent:
            self.epoll.modify(connection.fd, select.EPOLLIN)

    def read(self, connection: _Connection) -> None:
        try:
            data = connection.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # reset: as closed
        if not data:
            self.lost(connection)
            return
        if connection.index < 0:
            return  # nothing was asked
        buffer = connection.buffer
        buffer += data
        if not connection.answer_end:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            try:
                connection.read_head(end)
            except ValueError:
                self.lost(connection)  # not HTTP: an error, as bytes of the answer arrived
                return
        if len(buffer) >= connection.answer_end:
            self.answered(connection)

    def answered(self, connection: _Connection) -> None:
        now = time.monotonic()
        index, due, status = connection.index, connection.due, connection.status
        connection.index = -1
        connection.buffer.clear()
        connection.answer_end = 0
        if connection.close_after or connection.unsent:
            self.close(connection)
            self.connect_for_waiting()
        elif self.waiting:
            self.send(connection, *self.waiting.popleft())
        else:
            self.idle.append(connection)
        result = self.result
        result.completed += 1
        self.statuses[status] += 1
        if 200 <= status < 300:
            result.ok += 1
            self.latencies.append((now - due) * 1000)
            if self.answer_times:
                self.answer_times[index] = self.wall_offset + now
        self.request_done(now)

    def request_done(self, now: float) -> None:
        """A request was answered or failed: in closed loop its client sends the next one."""
        if not self.spec.rate and self.next_index < len(self.requests):
            self.send_next(now)

    # -- connections

    def open_pool(self) -> None:
        """Before the clock: the pool's connections, open and idle. One that cannot be opened
        ends this; the run opens the rest on demand, and counts their failures."""
        for _ in range(min(self.spec.connections, len(self.requests))):
            sock = socket.socket(self.family, socket.SOCK_STREAM)
            try:
                sock.connect(self.address)
            except OSError:
                sock.close()
                return
            _client_options(sock)
            connection = _Connection(sock, -1, 0.0)
            connection.connecting = False
            self.connections[connection.fd] = connection
            self.epoll.register(connection.fd, select.EPOLLIN)
            self.idle.append(connection)

    def connect(self, index: int, due: float) -> None:
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        _client_options(sock)
        connection = _Connection(sock, index, due)
        self.connections[connection.fd] = connection
        self.epoll.register(connection.fd, select.EPOLLOUT)
        if sock.connect_ex(self.address) not in (0, errno.EINPROGRESS):
            self.failed.append(connection)

    def on_connected(self, connection: _Connection) -> None:
        connection.connecting = False
        if connection.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self.lost(connection)
            return
        self.epoll.modify(connection.fd, select.EPOLLIN)
        self.send(connection, connection.index, connection.due, reused=False)

    def connect_for_waiting(self) -> None:
        """A connection went away: the first waiting request (if any) gets a new one."""
        if self.waiting and len(self.connections) < self.spec.connections:
            self.connect(*self.waiting.popleft())

    def lost(self, connection: _Connection) -> None:
        """The connection failed: the server closed or reset it, or it could not be opened."""
        if connection.closed:
            return
        self.close(connection)
        if connection.index < 0:
            self.idle.remove(connection)  # closed while idle: never handed out again
        elif connection.reused and not connection.buffer:
            # Closed before any byte of the answer on a reused connection: the server closed it
            # idle (keep-alive timeout) as the request went out; HTTP clients send it again.
            self.result.retries += 1
            self.connect(connection.index, connection.due)
            return
        else:
            self.result.errors += 1
            self.request_done(time.monotonic())
        self.connect_for_waiting()

    def close(self, connection: _Connection) -> None:
        connection.closed = True
        del self.connections[connection.fd]
        self.epoll.unregister(connection.fd)
        self.closing.append(connection.sock)

    def outcome(self, end: float, cpu_s: float) -> LoadResult:
        result = self.result
        result.wall_s = round(end - self.start, 3)
        result.cpu_s = round(cpu_s, 3)
        result.cpu_percent = round(100 * result.cpu_s / max(result.wall_s, 1e-9), 1)
        result.unfinished = len(self.requests) - result.completed - result.errors
        result.statuses = {str(code): n for code, n in sorted(self.statuses.items())}
        result.achieved_rps = round(result.ok / max(result.wall_s, 1e-9), 1)
        result.latencies_ms = [round(v, 3) for v in self.latencies]
        result.answered_at = self.answer_times
        result.started_at = self.wall_offset + self.start
        for key, value in latency_summary(self.latencies).items():
            setattr(result, key, value)
        return result


def run(spec: LoadSpec) -> LoadResult:
    """Run in this process (the harness uses run_in_subprocess)."""
    requests = read_requests(Path(spec.requests_path))
    cpu0 = _cpu_seconds()
    engine = _Run(spec, requests)
    end = engine.run()
    return engine.outcome(end, _cpu_seconds() - cpu0)


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
