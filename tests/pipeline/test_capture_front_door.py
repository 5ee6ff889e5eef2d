"""Capture's way into the pipeline (pipeline/ingestion/capture.py): a decoded request is enqueued
or refused with the pipeline's own errors, and nothing of a refused request is queued. The HTTP
answers to these refusals are tested through the views (tests/bklog_app/test_capture_api.py)."""

from datetime import UTC, datetime

import pytest
from django.test import override_settings

from pipeline.ingestion import capture, publish
from pipeline.ingestion.message import INGEST_QUEUE, parts_of
from pipeline.ingestion.projects import forget
from pipeline.redis import get_redis

pytestmark = pytest.mark.django_db

NOW = datetime(2024, 6, 1, 12, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture(autouse=True)
def empty_ingestion_queue():
    get_redis().delete(INGEST_QUEUE)
    yield
    get_redis().delete(INGEST_QUEUE)


def queued() -> list[dict]:
    raw = get_redis().lrange(INGEST_QUEUE, 0, -1)
    return [part for item in reversed(raw) for part in parts_of(publish.message_body(item)[1])]


def accept(token: str, events: list[dict]) -> None:
    capture.accept(token, events, ip="10.1.2.3", sent_at="2024-06-01T12:30:14Z", now=NOW)


def test_an_accepted_request_is_queued_as_one_captured_request(project):
    events = [{"event": "clicked", "distinct_id": "u1", "properties": {"a": 1}}]
    accept(project.api_token, events)
    assert queued() == [
        {
            "token": project.api_token,
            "project_id": project.id,
            "events": events,
            "ip": "10.1.2.3",
            "now": "2024-06-01T12:30:15.123+00:00",
            "sent_at": "2024-06-01T12:30:14Z",
        }
    ]


def test_an_unknown_token_is_refused(project):
    with pytest.raises(capture.UnknownToken):
        accept("phc_nobody_has_this", [{"event": "e", "distinct_id": "d"}])
    assert queued() == []


def test_no_events_for_a_known_token_is_accepted_and_queues_nothing(project):
    accept(project.api_token, [])
    assert queued() == []
    with pytest.raises(capture.UnknownToken):
        accept("phc_nobody_has_this", [])


def test_over_the_rate_limit_is_refused_with_the_limit(project):
    project.rate_limit_per_minute = 3
    project.save()
    forget()
    accept(project.api_token, [{"event": "e", "distinct_id": "d"}] * 3)
    with pytest.raises(capture.RateLimited) as refused:
        accept(project.api_token, [{"event": "e", "distinct_id": "d"}])
    assert refused.value.per_minute == 3
    minute = int(NOW.timestamp() // 60)
    assert int(get_redis().get(capture.RATE_LIMIT_KEY.format(project_id=project.id, minute=minute))) == 4
    assert len(queued()) == 1


def test_a_queue_that_does_not_answer_is_refused_as_unavailable(project, servers):
    accept(project.api_token, [{"event": "warm", "distinct_id": "d"}])  # the token's project is cached
    get_redis().delete(INGEST_QUEUE)
    servers["redis"].stop()
    try:
        with pytest.raises(capture.Unavailable) as refused:
            accept(project.api_token, [{"event": "e", "distinct_id": "d"}])
    finally:
        servers["redis"].start()
    assert "Redis" in str(refused.value)
    assert queued() == []


def test_a_broker_that_is_not_redis_gets_celerys_own_publish_of_the_same_message(project):
    """Celery's app keeps its configured (Redis) broker; the setting only steers enqueue.py to
    `send_task`, whose message must carry the same requests."""
    events = [{"event": "sent_as_a_task", "distinct_id": "u1"}]
    with override_settings(CELERY_BROKER_URL="amqp://guest@127.0.0.1//"):
        accept(project.api_token, events)
    [request] = queued()
    assert (request["project_id"], request["events"]) == (project.id, events)
