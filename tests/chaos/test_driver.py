"""The fault suite's load driver in front of several app nodes: requests are dealt to every node,
and one that meets a node that does not answer goes to the next, as a load balancer sends it."""

import http.server
import threading

import pytest

from chaos.driver import CONNECTION_ERROR, drive, send_one
from chaos.traffic import Request, http_request
from devservers import free_port

LOOPBACK = "127.0.0.1"


class _Counting(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.bodies.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def node():
    """A live node: (its port, the paths of the requests it answered)."""
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), _Counting)
    server.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], server.bodies
    server.shutdown()
    server.server_close()


def _requests(count: int):
    return (Request("valid", http_request(LOOPBACK, 0, f"/e/{n}", b"{}"), (str(n),)) for n in range(count))


def _drive(ports, count: int) -> list:
    outcomes = []
    drive(
        LOOPBACK, ports, _requests(count), rate=200, stop=threading.Event(), max_seconds=20, on_outcome=outcomes.append
    )
    return outcomes


def test_requests_are_dealt_to_every_node(node):
    first_port, first = node
    second_server = http.server.ThreadingHTTPServer((LOOPBACK, 0), _Counting)
    second_server.bodies = []
    threading.Thread(target=second_server.serve_forever, daemon=True).start()
    try:
        outcomes = _drive((first_port, second_server.server_address[1]), 20)
    finally:
        second_server.shutdown()
        second_server.server_close()
    assert sorted(o.status for o in outcomes) == [200] * 20
    assert len(first) == 10 and len(second_server.bodies) == 10


def test_a_request_to_a_dead_node_is_sent_to_the_live_one(node):
    port, answered = node
    outcomes = _drive((free_port(), port), 20)
    assert [o.status for o in outcomes] == [200] * 20
    assert sorted(answered) == sorted(f"/e/{n}" for n in range(20))


def test_no_live_node_is_a_connection_error():
    outcomes = _drive((free_port(), free_port()), 4)
    assert [o.status for o in outcomes] == [CONNECTION_ERROR] * 4


def test_a_probe_goes_to_the_first_node_that_answers(node):
    port, answered = node
    probe = Request("probe", http_request(LOOPBACK, port, "/e/probe", b"{}"), ("p",))
    assert send_one(LOOPBACK, (free_port(), port), probe) == 200
    assert answered == ["/e/probe"]
    assert send_one(LOOPBACK, (free_port(),), probe) == CONNECTION_ERROR
