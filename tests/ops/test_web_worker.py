"""bklog's Gunicorn worker (bklog_app/web_worker.py), run by real Gunicorn as operators run it:
gevent's own server, held to Gunicorn's keep-alive timeout, request limits, worker recycling and
trusted-proxy scheme."""

import socket
import uuid

import orjson
import pytest

from pipeline.ingestion.batch import ingest_messages
from tests.conftest import process_env
from tests.factories import make_project, make_user_with_key
from tests.ops.processes import GunicornProcess, http_get, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def gunicorn(test_database_url, **env) -> GunicornProcess:
    return GunicornProcess(process_env(test_database_url, CONSUL_ENABLED="false", **env)).start()


@pytest.fixture
def web(test_database_url):
    server = gunicorn(test_database_url, GUNICORN_KEEPALIVE="1")
    yield server
    server.stop()


def exchange(port: int, request: bytes) -> tuple[bytes, bool]:
    """Send `request` on a new connection; its answer, and whether the server then closed it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = connection.recv(65536)
            if not chunk:
                return answer, True
            answer += chunk
        connection.settimeout(3)
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except TimeoutError:
            return answer, False
        return answer, True


def test_the_default_worker_is_bklogs(web):
    assert "bklog_app.web_worker.Worker" in web.log.read_text()


def test_a_request_line_over_the_limit_is_400_and_the_connection_closed(web):
    answer, closed = exchange(web.port, b"GET /_health?" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 414") and closed
    answer, _ = exchange(web.port, b"GET /_health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")


def test_a_header_over_the_limit_is_400(web):
    answer, closed = exchange(web.port, b"GET /_health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431") and closed


def test_a_line_that_is_not_a_header_field_is_400_and_the_connection_closed(web):
    answer, closed = exchange(web.port, b"GET /_health HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400") and closed
    folded = b"GET /_health HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\nConnection: close\r\n\r\n"
    answer, _ = exchange(web.port, folded)
    assert answer.startswith(b"HTTP/1.1 200")


def test_too_many_header_fields_are_400(test_database_url):
    web = gunicorn(test_database_url, GUNICORN_CMD_ARGS="--limit-request-fields 10")
    try:
        fields = b"".join(b"X-Field-%d: v\r\n" % n for n in range(12))
        answer, closed = exchange(web.port, b"GET /_health HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 431") and closed
        answer, _ = exchange(web.port, b"GET /_health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200")
    finally:
        web.stop()


def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(web):
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as connection:
        connection.sendall(b"GET /_health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b'{"status": "ok"}'):
            answer += connection.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        assert connection.recv(65536) == b""  # closed by the server (our own timeout would raise)
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as silent:
        assert silent.recv(65536) == b""  # a client that never sends its request line


def test_keep_alive_zero_closes_every_connection_after_its_response(test_database_url):
    web = gunicorn(test_database_url, GUNICORN_KEEPALIVE="0")
    try:
        answer, closed = exchange(web.port, b"GET /_health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200") and closed
        assert b"\r\nConnection: close\r\n" in answer  # the client is told
    finally:
        web.stop()


def test_the_worker_recycles_after_max_requests_and_no_request_is_lost(test_database_url):
    web = gunicorn(test_database_url, GUNICORN_MAX_REQUESTS="15", GUNICORN_MAX_REQUESTS_JITTER="0")
    try:
        with socket.create_connection(("127.0.0.1", web.port), timeout=10) as connection:
            for sent in range(1, 16):  # one keep-alive connection (start-up health checks count too)
                connection.sendall(b"GET /_health HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = b""
                while not answer.endswith(b'{"status": "ok"}'):
                    chunk = connection.recv(65536)
                    assert chunk, f"closed without an answer to request {sent}"
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 200")
                if b"\r\nConnection: close\r\n" in answer:
                    break  # the answer that reached the limit says it is the last
            else:
                raise AssertionError("15 requests and the worker never said it would close")
            assert connection.recv(65536) == b""
        statuses = [http_get(f"{web.url}/_health", timeout=20)[0] for _ in range(25)]
        assert statuses == [200] * 25
        wait_until(lambda: web.log.read_text().count("Autorestarting worker") >= 2, 20, "two recycles", web.tail)
        assert web.log.read_text().count("Booting worker") >= 3
    finally:
        web.stop()


def next_page_of_events(web: GunicornProcess, headers: dict) -> str:
    project = make_project()
    _, key = make_user_with_key(project.organization)
    events = [{"event": "paged", "distinct_id": "u", "uuid": str(uuid.uuid4()),
               "timestamp": f"2024-06-01T10:00:0{n}Z"} for n in range(2)]  # fmt: skip
    message = {"id": str(uuid.uuid4()), "token": project.api_token, "project_id": project.id, "ip": None,
               "now": "2024-06-01T12:00:00.000+00:00", "sent_at": None, "events": events}  # fmt: skip
    assert ingest_messages([message]).stored == 2
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as connection:
        extra = b"".join(f"{name}: {value}\r\n".encode() for name, value in headers.items())
        connection.sendall(
            f"GET /api/projects/{project.id}/events/?limit=1 HTTP/1.1\r\nHost: bklog.test\r\n"
            f"Authorization: Bearer {key}\r\nConnection: close\r\n".encode()
            + extra
            + b"\r\n"
        )
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200"), answer
    return orjson.loads(body)["next"]


def test_a_trusted_proxy_sets_the_scheme(web):
    assert next_page_of_events(web, {"X-Forwarded-Proto": "https"}).startswith("https://bklog.test/")
    assert next_page_of_events(web, {}).startswith("http://bklog.test/")


def test_an_untrusted_peer_cannot_set_the_scheme(test_database_url):
    web = gunicorn(test_database_url, GUNICORN_FORWARDED_ALLOW_IPS="10.9.9.9")
    try:
        assert next_page_of_events(web, {"X-Forwarded-Proto": "https"}).startswith("http://bklog.test/")
    finally:
        web.stop()


def test_a_head_response_has_no_body(web):
    answer, _ = exchange(web.port, b"HEAD /_health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200") and body == b""


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (b"Expect: 200-ok\r\n", b"417"),
        (b"Content-Length: 2\r\nContent-Length: 3\r\n", b"400"),
        (b"Host: y\r\n", b"400"),
        (b"Transfer-Encoding: gzip\r\n", b"501"),
    ],
)
def test_requests_gunicorn_refuses_are_refused(web, headers, status):
    answer, closed = exchange(web.port, b"POST /e/ HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n{}")
    assert answer.startswith(b"HTTP/1.1 " + status) and closed
