"""The benchmark harness's pieces, without the stack: nothing here asserts on timing.

The load generator runs (in its own process, as in a bench) against a tiny loopback HTTP/1.1
server that counts what it received; the statistics and the results file are checked on known
numbers.
"""

import json
import threading
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


@pytest.fixture
def counting_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CountingHandler)
    server.daemon_threads = True
    server.lock = threading.Lock()
    server.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


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


def test_percentile_is_nearest_rank():
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
    assert md_path.read_text().startswith("|") or "| figure |" in md_path.read_text()
