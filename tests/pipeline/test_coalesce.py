"""Capture coalescing (pipeline/ingestion/coalesce.py): requests of one process that arrive
within the linger share one message, each is answered only once that message is published, a
failed publish fails every request in it, and a worker stores every part of such a message."""

import threading
import uuid

import pytest
from django.test import override_settings

from pipeline.ingestion import publish
from pipeline.ingestion.coalesce import Coalescer
from pipeline.ingestion.enqueue import enqueue
from pipeline.ingestion.message import INGEST_QUEUE, CapturedRequest, events_in, parts_of
from pipeline.ingestion.publish import GuardChanged
from pipeline.redis import _client_for
from tests.pipeline.test_ingestion_e2e import assert_stored_exactly_once

# Long enough that a test finishing before it proves the message was not held for it.
LONG_LINGER = 60.0


class Recorder:
    """A publish function that records what it was given, and can be made to fail."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.calls: list[tuple[list[dict], object]] = []
        self.error = error
        self.lock = threading.Lock()

    def __call__(self, parts, guard):
        with self.lock:
            self.calls.append((list(parts), guard))
        if self.error is not None:
            raise self.error


def part(name: str, events: int = 1) -> dict:
    events_ = [{"event": name}] * events
    return {"token": "t", "project_id": 1, "events": events_, "ip": None, "now": "n", "sent_at": None}


def submit_all(coalescer: Coalescer, parts: list[dict], guards=None, timeout: float = 20) -> list[BaseException | None]:
    """Submit each part from a thread of its own, all at once; return what each raised."""
    outcomes: list[BaseException | None] = [None] * len(parts)
    barrier = threading.Barrier(len(parts))

    def run(index: int) -> None:
        barrier.wait()
        try:
            coalescer.submit(parts[index], guards[index] if guards else None)
        except BaseException as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(parts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a request was never answered"
    return outcomes


def test_requests_within_the_linger_share_one_message():
    publish = Recorder()
    coalescer = Coalescer(publish, linger_seconds=0.5, max_events=1_000)
    parts = [part(f"e{i}") for i in range(8)]
    assert submit_all(coalescer, parts) == [None] * 8
    assert len(publish.calls) == 1
    published, guard = publish.calls[0]
    assert sorted(p["events"][0]["event"] for p in published) == sorted(f"e{i}" for i in range(8))
    assert guard is None


def test_a_full_message_is_published_without_waiting_out_the_linger():
    publish = Recorder()
    coalescer = Coalescer(publish, linger_seconds=LONG_LINGER, max_events=10)
    assert submit_all(coalescer, [part("big", events=5), part("big", events=5)]) == [None, None]
    assert [len(parts) for parts, _ in publish.calls] == [2]


def test_a_request_alone_is_published_at_once_without_a_linger():
    publish = Recorder()
    Coalescer(publish, linger_seconds=0, max_events=10).submit(part("alone"))
    assert publish.calls == [([part("alone")], None)]


def test_each_guard_gets_messages_of_its_own():
    publish = Recorder()
    coalescer = Coalescer(publish, linger_seconds=0.5, max_events=1_000)
    guards = [("epoch", b"1"), ("epoch", b"2"), ("epoch", b"1"), None]
    assert submit_all(coalescer, [part(str(i)) for i in range(4)], guards) == [None] * 4
    by_guard = {guard: sorted(p["events"][0]["event"] for p in parts) for parts, guard in publish.calls}
    assert by_guard == {("epoch", b"1"): ["0", "2"], ("epoch", b"2"): ["1"], None: ["3"]}


def test_a_failed_publish_fails_every_request_in_the_message():
    error = GuardChanged(b"7")
    coalescer = Coalescer(Recorder(error), linger_seconds=0.5, max_events=1_000)
    outcomes = submit_all(coalescer, [part(str(i)) for i in range(5)], [("epoch", b"6")] * 5)
    assert outcomes == [error] * 5


def test_a_message_after_a_published_one_starts_afresh():
    publish = Recorder()
    coalescer = Coalescer(publish, linger_seconds=0, max_events=1_000)
    coalescer.submit(part("first"))
    coalescer.submit(part("second"))
    assert [[p["events"][0]["event"] for p in parts] for parts, _ in publish.calls] == [["first"], ["second"]]


def test_both_message_forms_are_read():
    single = part("old form", events=3)
    assert parts_of(single) == [single] and events_in(single) == 3
    coalesced = {"parts": [part("a", events=2), part("b")]}
    assert parts_of(coalesced) == coalesced["parts"] and events_in(coalesced) == 3


@pytest.mark.django_db(transaction=True)
def test_concurrent_captures_go_as_one_message_and_every_part_is_stored(project, servers, make_worker):
    url = servers["redis"].url[:-1] + "8"  # a broker database of its own: no other worker
    broker = _client_for(url)
    broker.flushdb()
    requests = [
        [{"event": "coalesced", "distinct_id": f"user-{i}", "uuid": str(uuid.uuid4())} for _ in range(i % 3 + 1)]
        for i in range(6)
    ]
    outcomes: list[BaseException | None] = []
    barrier = threading.Barrier(len(requests))

    def capture(events):
        barrier.wait()
        try:
            enqueue(
                CapturedRequest(
                    token=project.api_token,
                    project_id=project.id,
                    events=events,
                    ip="10.0.0.1",
                    now="2024-06-01T00:00:00.000+00:00",
                    sent_at=None,
                )
            )
            outcomes.append(None)
        except BaseException as exc:
            outcomes.append(exc)

    with override_settings(CELERY_BROKER_URL=url, CAPTURE_LINGER_MS=500):
        threads = [threading.Thread(target=capture, args=(events,)) for events in requests]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        assert outcomes == [None] * len(requests)
        queued = broker.lrange(INGEST_QUEUE, 0, -1)
        assert len(queued) == 1
        kwargs = publish.message_body(queued[0])[1]
        assert sorted(len(p["events"]) for p in kwargs["parts"]) == sorted(len(events) for events in requests)

        make_worker("ingestion", CELERY_BROKER_URL=url)
        assert_stored_exactly_once(project.id, [event for events in requests for event in events], timeout=60)
    broker.flushdb()
