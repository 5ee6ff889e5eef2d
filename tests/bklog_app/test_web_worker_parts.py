"""The web worker's per-request work, without a server (bklog_app/web_worker.py): its header
parser gives what the standard library's `http.client.parse_headers` gives for well-formed
requests, within the same limits, and refuses lines that are not header fields; its proxy trust
is remembered per peer."""

import http.client
import io
import ipaddress

import pytest

from bklog_app import web_worker
from bklog_app.web_worker import MAX_HEADER_FIELDS, MAX_HEADER_LINE, RefusedRequest, Worker, read_headers

WELL_FORMED = [
    b"Host: x\r\n\r\n",
    b"Host: x\r\nContent-Length: 12\r\nContent-Type: application/json\r\n\r\nbody follows",
    b"X-Spaces:   lots  of  space  \r\nX-Tab:\tv\r\nX-Empty:\r\nX-Colons: a:b:c\r\n\r\n",
    b"X-Folded: first\r\n  second\r\n\tthird\r\nHost: y\r\n\r\n",
    b"Host: a\r\nHost: b\r\nContent-Length: 1\r\ncontent-length: 2\r\n\r\n",
    b"X-Latin: caf\xe9\r\n\n",  # a bare LF ends the headers too
    b"Host: x\n",  # the connection ends before the blank line
    b"\r\n",
    b"Odd!#$%&'*+-.^_`|~Name: v\r\n\r\n",
]


@pytest.mark.parametrize("raw", WELL_FORMED)
def test_well_formed_headers_read_as_the_standard_library_reads_them(raw):
    ours = read_headers(io.BytesIO(raw))
    standard = http.client.parse_headers(io.BytesIO(raw))
    assert ours.items() == standard.items()
    assert ours.status == ""
    for name in ("host", "Content-Length", "x-folded", "missing"):
        assert ours.get(name) == standard.get(name)
        assert ours.get_all(name) == standard.get_all(name)


def test_the_body_is_left_unread():
    stream = io.BytesIO(b"Host: x\r\nContent-Length: 4\r\n\r\nbody")
    read_headers(stream)
    assert stream.read() == b"body"


def test_a_line_over_the_limit_marks_the_message_as_pywsgi_expects():
    message = read_headers(io.BytesIO(b"Host: x\r\nX-Big: " + b"b" * MAX_HEADER_LINE + b"\r\n\r\n"))
    assert message.status == "Line too long"


def test_more_fields_than_the_limit_are_refused():
    fields = b"".join(b"X-F%d: v\r\n" % n for n in range(MAX_HEADER_FIELDS))
    assert len(read_headers(io.BytesIO(fields + b"\r\n")).items()) == MAX_HEADER_FIELDS
    with pytest.raises(http.client.HTTPException):
        read_headers(io.BytesIO(fields + b"X-One-More: v\r\n\r\n"))


@pytest.mark.parametrize(
    "line",
    [
        b"no colon here\r\n",
        b": empty name\r\n",
        b"Space Before : colon\r\n",
        b"Bad\x01Name: v\r\n",
        b" starts-folded: v\r\n",
    ],
)
def test_a_line_that_is_not_a_header_field_is_refused_with_400(line):
    with pytest.raises(RefusedRequest) as refused:
        read_headers(io.BytesIO(line + b"Host: x\r\n\r\n"))
    assert refused.value.status == 400


def worker_trusting(*allowed: str) -> Worker:
    """The part of the web worker `init_process` sets up for `trusts`."""
    worker = Worker.__new__(Worker)
    worker.trust_everyone = "*" in allowed
    worker.trusted_networks = [ipaddress.ip_network(entry, strict=False) for entry in allowed if entry != "*"]
    worker._trusted = {}
    return worker


def test_a_peers_trust_is_remembered_and_the_memory_bounded(monkeypatch):
    worker = worker_trusting("127.0.0.1", "10.1.0.0/16")
    for _ in range(2):
        assert worker.trusts("127.0.0.1")
        assert worker.trusts("10.1.200.3")
        assert not worker.trusts("10.2.0.1")
        assert not worker.trusts("not-an-address")
    assert worker._trusted == {"127.0.0.1": True, "10.1.200.3": True, "10.2.0.1": False, "not-an-address": False}
    monkeypatch.setattr(web_worker, "TRUSTED_PEERS_KEPT", 4)
    assert worker.trusts("10.1.0.9")
    assert worker._trusted == {"10.1.0.9": True}
    assert worker_trusting("*").trusts("203.0.113.7")
