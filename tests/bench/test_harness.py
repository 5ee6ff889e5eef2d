"""The benchmark harness's pieces, without the stack: nothing here asserts on timing (but for lower
bounds that a test server's own pauses guarantee).

The load generator runs (in its own process, as in a bench) against tiny loopback HTTP/1.1
servers that count what they received: Python's http.server, and raw sockets for what it cannot
do (an answer in pieces, a keep-alive connection closed unannounced). The statistics and the
results file are checked on known numbers.
"""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench import results
from bench.loadgen import LoadSpec, build_post, read_requests, run_in_subprocess, write_requests
from bench.stats import percentile, spread


class _CountingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Gunicorn answers

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server = self.server
        with server.lock:
            server.bodies.append(body)
        status = 429 if body.endswith(b'"refuse"}') else 200
        reply = b'{"status": 1}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


class _ClosingHandler(_CountingHandler):
    """Answers with `Connection: close` and closes the connection."""

    def end_headers(self):
        self.send_header("Connection", "close")
        super().end_headers()


def _serve_http(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.lock = threading.Lock()
    server.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def counting_server():
    yield from _serve_http(_CountingHandler)


@pytest.fixture
def closing_server():
    yield from _serve_http(_ClosingHandler)


class _RawServer:
    """A loopback HTTP/1.1 server on raw sockets, a thread per connection, each running
    `serve(server, conn, stream)`; `bodies` are the requests it answered."""

    ANSWER_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n"
    KEEP_ALIVE_HEAD = ANSWER_HEAD + b"connection: keep-alive\r\n\r\n"
    ANSWER_BODY = b'{"status": 1}'

    def __init__(self, serve):
        self.serve = serve
        self.lock = threading.Lock()
        self.bodies = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.server_address = self.listener.getsockname()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn, conn.makefile("rb") as stream:
            self.serve(self, conn, stream)

    @staticmethod
    def read_request(stream):
        """The body of the next request on the connection, None once the client closed it."""
        length = None
        while (line := stream.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return None if length is None else stream.read(length)

    def answered(self, body):
        with self.lock:
            self.bodies.append(body)

    def close(self):
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self.listener.close()


def _answer_then_close(server, conn, stream):
    """One request per connection, answered as keep-alive, then the connection is closed."""
    body = server.read_request(stream)
    if body is not None:
        server.answered(body)
        conn.sendall(server.KEEP_ALIVE_HEAD + server.ANSWER_BODY)


def _announce_close_then_wait(server, conn, stream):
    """Answers one request with `Connection: Close` but leaves the connection open: a request the
    client sent on it anyway is left unanswered."""
    body = server.read_request(stream)
    if body is not None:
        server.answered(body)
        conn.sendall(server.ANSWER_HEAD + b"Connection: Close\r\n\r\n" + server.ANSWER_BODY)
        server.read_request(stream)


def _answer_then_drop_the_next(server, conn, stream):
    """As a server whose idle timeout fires as the next request arrives: that one is read, left
    unanswered, and the connection closed."""
    _answer_then_close(server, conn, stream)
    server.read_request(stream)


ANSWER_PAUSE_S = 0.1


def _answer_in_pieces(server, conn, stream):
    """Keep-alive answers whose header block and two halves of the body are separate writes,
    ANSWER_PAUSE_S apart."""
    while (body := server.read_request(stream)) is not None:
        server.answered(body)
        conn.sendall(server.KEEP_ALIVE_HEAD)
        time.sleep(ANSWER_PAUSE_S)
        conn.sendall(server.ANSWER_BODY[:5])
        time.sleep(ANSWER_PAUSE_S)
        conn.sendall(server.ANSWER_BODY[5:])


@pytest.fixture
def raw_server(request):
    server = _RawServer(request.param)
    yield server
    server.close()


def _requests(server, count: int, refuse_every: int = 0) -> list[bytes]:
    host, port = server.server_address
    out = []
    for index in range(count):
        marker = "refuse" if refuse_every and index % refuse_every == 0 else "ok"
        body = json.dumps({"event": "e", "distinct_id": f"u{index}", "n": index, "m": marker}).encode()
        out.append(build_post(host, port, "/e/", body))
    return out


def test_request_file_round_trip(tmp_path):
    requests = [b"a", b"", b"\x00" * 70_000]
    path = tmp_path / "requests.bin"
    assert write_requests(path, requests) == 3
    assert read_requests(path) == requests


@pytest.mark.parametrize("rate", [400.0, None], ids=["open-loop", "closed-loop"])
def test_load_generator_sends_every_request_once(counting_server, tmp_path, rate):
    requests = _requests(counting_server, 120, refuse_every=10)
    path = tmp_path / "requests.bin"
    write_requests(path, requests)
    host, port = counting_server.server_address
    spec = LoadSpec(
        host=host,
        port=port,
        requests_path=str(path),
        rate=rate,
        connections=4,
        max_seconds=30,
        label="smoke",
        record_answer_times=True,
    )

    result = run_in_subprocess(spec)

    assert sorted(counting_server.bodies) == sorted(r.split(b"\r\n\r\n", 1)[1] for r in requests)
    assert result.sent == result.completed == 120
    assert result.statuses == {"200": 108, "429": 12}
    assert result.ok == len(result.latencies_ms) == 108
    assert result.errors == result.unfinished == 0
    assert sum(at is not None for at in result.answered_at) == 108
    assert result.p50_ms <= result.p95_ms <= result.p99_ms <= result.max_ms
    assert result.cpu_s >= 0


def _run_load(server, tmp_path, requests, **spec):
    path = tmp_path / "requests.bin"
    write_requests(path, requests)
    host, port = server.server_address
    return run_in_subprocess(LoadSpec(host=host, port=port, requests_path=str(path), max_seconds=30, **spec))


def _bodies(requests):
    return sorted(r.split(b"\r\n\r\n", 1)[1] for r in requests)


@pytest.mark.parametrize("rate", [200.0, None], ids=["open-loop", "closed-loop"])
def test_load_generator_opens_a_new_connection_after_connection_close(closing_server, tmp_path, rate):
    requests = _requests(closing_server, 60)

    result = _run_load(closing_server, tmp_path, requests, rate=rate, connections=2)

    assert sorted(closing_server.bodies) == _bodies(requests)
    assert result.sent == result.completed == result.ok == 60
    assert result.errors == result.retries == result.unfinished == 0


@pytest.mark.parametrize("rate", [200.0, None], ids=["open-loop", "closed-loop"])
@pytest.mark.parametrize("raw_server", [_announce_close_then_wait], indirect=True)
def test_load_generator_does_not_reuse_a_connection_announced_closed(raw_server, tmp_path, rate):
    requests = _requests(raw_server, 20)

    result = _run_load(raw_server, tmp_path, requests, rate=rate, connections=2)

    assert sorted(raw_server.bodies) == _bodies(requests)
    assert result.sent == result.completed == result.ok == 20
    assert result.errors == result.retries == result.unfinished == 0  # a reuse would have needed a retry


@pytest.mark.parametrize("rate", [50.0, None], ids=["open-loop", "closed-loop"])
@pytest.mark.parametrize(
    ("raw_server", "retries"),
    [
        # Closed after each answer: whether the close is seen while the connection is idle
        # (dropped) or only on the next write (sent again) is a race, so no retry count.
        (_answer_then_close, None),
        # Reads the next request on the reused connection, then closes without answering: every
        # request but the first goes out first on a reused connection and is sent again.
        (_answer_then_drop_the_next, 19),
    ],
    indirect=["raw_server"],
    ids=["closed-while-idle", "dropped-on-reuse"],
)
def test_load_generator_survives_keep_alive_connections_the_server_closes(raw_server, tmp_path, rate, retries):
    requests = _requests(raw_server, 20)

    result = _run_load(raw_server, tmp_path, requests, rate=rate, connections=1)

    assert sorted(raw_server.bodies) == _bodies(requests)  # every request answered exactly once
    assert result.sent == result.completed == result.ok == 20
    assert result.errors == result.unfinished == 0
    if retries is not None:
        assert result.retries == retries


def _answer_keep_alive(server, conn, stream):
    with server.lock:
        server.connections = getattr(server, "connections", 0) + 1
    while (body := server.read_request(stream)) is not None:
        server.answered(body)
        conn.sendall(server.KEEP_ALIVE_HEAD + server.ANSWER_BODY)


@pytest.mark.parametrize("raw_server", [_answer_keep_alive], indirect=True)
def test_open_loop_opens_its_pool_before_the_clock_starts(raw_server, tmp_path):
    """At 50 requests/s, answered at once, one connection would do; all four are open before the
    first request is due, as a keep-alive client's pool would be."""
    requests = _requests(raw_server, 10)

    result = _run_load(raw_server, tmp_path, requests, rate=50.0, connections=4)

    assert sorted(raw_server.bodies) == _bodies(requests)
    assert result.ok == 10 and result.errors == result.retries == 0
    assert raw_server.connections == 4


@pytest.mark.parametrize("raw_server", [_answer_in_pieces], indirect=True)
def test_load_generator_reads_an_answer_in_pieces_and_counts_the_wait(raw_server, tmp_path):
    requests = _requests(raw_server, 3)

    result = _run_load(raw_server, tmp_path, requests, rate=100.0, connections=1)

    assert sorted(raw_server.bodies) == _bodies(requests)
    assert result.completed == result.ok == 3
    assert result.errors == result.unfinished == 0
    # Lower bounds the server's pauses guarantee, not timings: request k is due k * 10 ms after
    # the start, waits for the one connection, and its answer takes two pauses after k others'.
    answer_ms = 2 * ANSWER_PAUSE_S * 1000
    for k, latency in enumerate(result.latencies_ms):
        assert latency >= (k + 1) * answer_ms - k * 10

    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert percentile([3, 1, 2], 50) == 2
    assert percentile([], 50) is None


def test_spread_takes_median_min_max_of_runs():
    assert spread([3.0, 1.0, 2.0]) | {"values": None} == {"median": 2.0, "min": 1.0, "max": 3.0, "values": None}
    assert spread([None, 4.0])["median"] == 4.0
    assert spread([None])["median"] is None


def test_results_have_the_required_keys(tmp_path):
    runs = {
        "single": [
            {"max_rps": v, "rates": {"1000": {"p99_ms": p, "achieved_rps": 990.0}}}
            for v, p in ((1500, 20.0), (1700, 30.0), (1600, 25.0))
        ],
        "batch": [{"events_per_s": v} for v in (6000, 5000, 7000)],
        "lag": [{"p50_s": 0.2, "p99_s": v} for v in (1.0, 0.5, 0.7)],
        "naive": [{"events_per_s": v} for v in (100, 150, 120)],
        "isolation": [{"b_lag_p99_s": v, "a_events_per_s_while_b_sent": 4.5} for v in (0.4, 0.6, 1.5)],
        "clickhouse_raw": [{"events_per_s": v} for v in (300_000, 320_000, 310_000)],
    }
    rss = {"bklog-web": 120.5, "bklog-worker-ingestion/pool-1": 200.0}
    machine = {"cores": 2, "memory_gb": 24}

    document = results.build(runs, rss_mb=rss, machine=machine, options={"runs": 3, "quick": False})
    json_path, md_path = results.write(document, tmp_path)

    saved = json.loads(json_path.read_text())
    assert saved["capture_single"]["max_rps"] == 1600
    assert saved["capture_single"]["p99_ms_at_1000"] == 25.0
    assert saved["e2e_batch"]["events_per_s"] == 6000
    assert saved["lag"]["p99_s"] == 0.7
    assert saved["naive"]["events_per_s"] == 120
    assert saved["clickhouse_raw"]["events_per_s"] == 310_000
    assert saved["rss_mb"] == rss
    assert saved["machine"] == machine
    assert saved["capture_single"]["spread"]["max_rps"]["min"] == 1500
    assert saved["targets"]["batch_vs_naive"]["value"] == 50.0
    assert saved["isolation"]["b_lag_p99_s"] == 0.6
    assert saved["isolation"]["a_events_per_s_while_b_sent"] == 4.5
    assert saved["targets"]["isolation_b_lag_p99"] == {
        "target": "a normal project's lag p99 <= 1 s while another's plugin takes 200 ms per event",
        "value": 0.6,
        "bound": 1.0,
        "met": True,
    }
    assert "| isolation.b_lag_p99_s | 0.6 |" in md_path.read_text()
    assert md_path.read_text().startswith("|") or "| figure |" in md_path.read_text()
