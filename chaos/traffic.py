"""What the driver sends: valid events (tracked by uuid) and bad requests (malformed, truncated,
oversized, wrongly encoded, hypothesis-generated), each as the raw bytes of one HTTP/1.1 request."""

from __future__ import annotations

import gzip
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson

from bench.payloads import event as sample_event


@dataclass(frozen=True)
class Request:
    kind: str  # "valid", "probe", or the label of a bad request
    raw: bytes
    uuids: tuple[str, ...] = field(default=())


def http_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}", "Connection: keep-alive"]
    lines += [f"{name}: {value}" for name, value in (headers or {"Content-Type": "application/json"}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def valid_requests(host: str, port: int, token: str, events_per_request: int) -> Iterator[Request]:
    """Endless: mostly /batch/ (as posthog-python sends it, a tenth gzipped), some single events on /e/."""
    for index in itertools.count():
        if index % 10 == 9:
            one = sample_event(index, f"user-{index % 997}")
            body = orjson.dumps({**one, "api_key": token})
            yield Request("valid", http_request(host, port, "/e/", body), (one["uuid"],))
            continue
        events = [sample_event(index, f"user-{(index * 7 + n) % 997}") for n in range(events_per_request)]
        body = orjson.dumps({"api_key": token, "batch": events})
        headers = {"Content-Type": "application/json"}
        if index % 10 == 4:
            body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
        yield Request("valid", http_request(host, port, "/batch/", body, headers), tuple(e["uuid"] for e in events))


def probe_request(host: str, port: int, token: str, name: str) -> Request:
    one = sample_event(0, f"probe-{name}", name=f"chaos probe {name}")
    return Request("probe", http_request(host, port, "/e/", orjson.dumps({**one, "api_key": token})), (one["uuid"],))


def bad_bodies(token: str) -> list[tuple[str, bytes, dict[str, str] | None, str]]:
    """(label, body, headers, path): requests the capture API must refuse with a 4xx."""
    good = orjson.dumps({"api_key": token, "batch": [sample_event(1, "bad-user")]})
    zipped = gzip.compress(good)
    no_distinct_id = sample_event(2, "x")
    del no_distinct_id["distinct_id"]
    return [
        ("truncated json", good[: len(good) // 2], None, "/batch/"),
        ("truncated gzip", zipped[: len(zipped) // 2], {"Content-Encoding": "gzip"}, "/batch/"),
        ("not gzip", b"\x1f\x8bthis is not a gzip stream", {"Content-Encoding": "gzip"}, "/batch/"),
        ("invalid utf-8", b'{"api_key": "\xff\xfe\xfd", "batch": [}', None, "/batch/"),
        ("utf-16 json", good.decode().encode("utf-16"), None, "/batch/"),
        (
            "latin-1 json",
            json.dumps({"api_key": token, "event": "caf\u00e9"}, ensure_ascii=False).encode("latin-1"),
            None,
            "/e/",
        ),
        ("base64 garbage", b"eyJhcGlfa2V5Ijo%%%%", {"Content-Type": "text/plain"}, "/e/"),
        ("empty body", b"", None, "/e/"),
        ("no token", orjson.dumps({"batch": [sample_event(3, "u")]}), None, "/batch/"),
        (
            "unknown token",
            orjson.dumps({"api_key": "phc_not_a_token", "batch": [sample_event(4, "u")]}),
            None,
            "/batch/",
        ),
        ("no distinct_id", orjson.dumps({"api_key": token, "batch": [no_distinct_id]}), None, "/batch/"),
        (
            "invalid uuid",
            orjson.dumps({"api_key": token, "batch": [{**sample_event(5, "u"), "uuid": "nope"}]}),
            None,
            "/batch/",
        ),
        (
            "oversized event",
            orjson.dumps(
                {
                    "api_key": token,
                    "event": "big",
                    "distinct_id": "u",
                    "properties": {"blob": "x" * (2 * 1024 * 1024 + 10)},
                }
            ),
            None,
            "/e/",
        ),
        ("form without data", b"foo=bar", {"Content-Type": "application/x-www-form-urlencoded"}, "/e/"),
    ]


def bad_requests(host: str, port: int, token: str) -> list[Request]:
    return [
        Request(label, http_request(host, port, path, body, headers or {"Content-Type": "application/json"}))
        for label, body, headers, path in bad_bodies(token)
    ]


def hypothesis_bodies(token: str, count: int) -> list[tuple[bytes, str]]:
    """Bodies drawn by hypothesis (derandomized: the same ones every run, so CI stays stable):
    arbitrary JSON inside a plausible envelope, and arbitrary bytes."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)  # JSON has no lone surrogates
    scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | text
    json_values = st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4), max_leaves=12
    )
    event_like = st.fixed_dictionaries(
        {"event": json_values, "distinct_id": json_values},
        optional={"properties": json_values, "timestamp": json_values, "uuid": json_values, "$set": json_values},
    )
    bodies = st.one_of(
        st.builds(
            lambda batch: orjson.dumps({"api_key": token, "batch": batch}),
            st.lists(event_like, max_size=3) | json_values,
        ),
        st.builds(lambda one: orjson.dumps({**one, "api_key": token}), event_like),
        st.builds(lambda value: orjson.dumps(value), json_values),
        st.binary(max_size=200),
    )
    out: list[tuple[bytes, str]] = []

    @settings(
        max_examples=count, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck)
    )
    @given(bodies, st.sampled_from(["/batch/", "/e/", "/capture/", "/engage/"]))
    def collect(body: bytes, path: str) -> None:
        out.append((body, path))

    collect()
    return out[:count]


def fuzz_requests(host: str, port: int, token: str, count: int) -> list[Request]:
    return [
        Request("hypothesis", http_request(host, port, path, body)) for body, path in hypothesis_bodies(token, count)
    ]
