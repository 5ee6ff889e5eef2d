"""The capture journal (pipeline/ingestion/journal.py): a message taken off the queue and then
lost (as kombu's Redis transport can lose one between BRPOP and recording it unacknowledged) is
published again by the sweep and stored once; messages queued, unacknowledged or stored are
left alone."""

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import orjson
import pytest
from django.test import override_settings

from pipeline.ingestion import journal, tasks
from pipeline.ingestion.enqueue import publish_journaled, republish
from pipeline.ingestion.message import INGEST_QUEUE
from pipeline.ingestion.tasks import sweep_journal
from pipeline.redis import _client_for
from tests.ops.test_metrics import scrape, value
from tests.pipeline.test_ingestion_e2e import assert_stored_exactly_once

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker(servers):
    url = servers["redis"].url[:-1] + "6"  # a broker database of its own: no other worker
    client = _client_for(url)
    client.flushdb()
    with override_settings(CELERY_BROKER_URL=url):
        yield url, client
    client.flushdb()


def capture_kwargs(project, n: int, prefix: str) -> dict:
    events = [{"event": "journaled", "distinct_id": f"{prefix}-{i}", "uuid": str(uuid.uuid4())} for i in range(n)]
    return {"token": project.api_token, "project_id": project.id, "events": events, "ip": None,
            "now": "2024-06-01T00:00:00.000+00:00", "sent_at": None}  # fmt: skip


def journal_ids(client) -> set[str]:
    return {member.decode() for member in client.zrange(journal.JOURNAL_KEY, 0, -1)}


def test_a_lost_message_is_published_again_and_stored_once(client, project, broker, make_worker):
    url, redis = broker
    queued = capture_kwargs(project, 3, "queued")
    lost = capture_kwargs(project, 4, "lost")
    queued_id = publish_journaled(queued)
    lost_id = publish_journaled(lost)
    assert journal_ids(redis) == {queued_id, lost_id}
    # A consumer took the message off the queue and died before recording it unacknowledged.
    assert redis.lrem(INGEST_QUEUE, 1, redis.hget(journal.MESSAGES_KEY, lost_id)) == 1

    before = value(scrape(client), "bklog_capture_messages_republished_total")
    with override_settings(INGESTION_JOURNAL_GRACE_SECONDS=0):
        counts = sweep_journal()
    assert counts == {"old": 2, "pending": 1, "republished": 1, "gone": 0}
    assert lost_id not in journal_ids(redis) and queued_id in journal_ids(redis)
    assert value(scrape(client), "bklog_capture_messages_republished_total") == before + 1

    make_worker("ingestion", CELERY_BROKER_URL=url)
    assert_stored_exactly_once(project.id, queued["events"] + lost["events"], timeout=60)
    deadline = time.monotonic() + 30
    while journal_ids(redis) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert journal_ids(redis) == set()  # forgotten once stored


def test_unacknowledged_messages_are_left_alone(project, broker):
    _, client = broker
    message_id = publish_journaled(capture_kwargs(project, 2, "unacked"))
    raw = client.rpop(INGEST_QUEUE)
    tag = orjson.loads(raw)["properties"]["delivery_tag"]
    client.hset(journal.UNACKED_KEY, tag, raw)  # what kombu records for a delivered message
    assert journal.sweep(INGEST_QUEUE, republish, grace_seconds=0)["pending"] == 1
    assert client.llen(INGEST_QUEUE) == 0
    assert journal_ids(client) == {message_id}


def test_messages_kombu_pushed_back_re_encoded_are_left_alone(project, broker):
    _, client = broker
    requeued_id = publish_journaled(capture_kwargs(project, 2, "requeued"))
    lost_id = publish_journaled(capture_kwargs(project, 2, "lost"))
    requeued = orjson.loads(client.hget(journal.MESSAGES_KEY, requeued_id))
    client.delete(INGEST_QUEUE)
    # What kombu's restore (visibility timeout, reject with requeue, warm shutdown) pushes: the
    # message marked redelivered, serialised by kombu's json, with the same delivery tag.
    requeued["headers"]["redelivered"] = True
    client.lpush(INGEST_QUEUE, json.dumps(requeued))

    counts = journal.sweep(INGEST_QUEUE, republish, grace_seconds=0)
    assert counts == {"old": 2, "pending": 1, "republished": 1, "gone": 0}
    assert requeued_id in journal_ids(client) and lost_id not in journal_ids(client)
    assert client.llen(INGEST_QUEUE) == 2  # the restored message and the lost one's copy


def test_young_entries_are_not_looked_at(project, broker):
    _, client = broker
    publish_journaled(capture_kwargs(project, 1, "young"))
    client.rpop(INGEST_QUEUE)
    assert journal.sweep(INGEST_QUEUE, republish, grace_seconds=3600)["old"] == 0


def test_capture_records_its_message_in_the_journal(client, project, broker):
    _, redis = broker
    body = orjson.dumps({"api_key": project.api_token, "event": "e", "distinct_id": "u"})
    assert client.post("/e/", data=body, content_type="application/json").status_code == 200
    [message_id] = journal_ids(redis)
    assert redis.hget(journal.MESSAGES_KEY, message_id) == redis.lindex(INGEST_QUEUE, 0)


def test_touch_restarts_the_grace_period_of_known_entries_only(project, broker):
    _, client = broker
    message_id = publish_journaled(capture_kwargs(project, 1, "touched"))
    client.zadd(journal.JOURNAL_KEY, {message_id: 0})  # as if published long ago
    journal.touch([message_id, "never-published"])
    assert client.zscore(journal.JOURNAL_KEY, message_id) > journal.now_ms() - 60_000
    assert client.zscore(journal.JOURNAL_KEY, "never-published") is None
    client.rpop(INGEST_QUEUE)
    assert journal.sweep(INGEST_QUEUE, republish, grace_seconds=60)["old"] == 0


def test_a_batch_touches_only_the_entries_of_messages_captured_long_ago():
    """Half the grace period or more since capture, no `now`, or not decodable: touched. A message
    captured just now is not: its entry is not old enough for the sweeper to look at."""
    now = datetime.now(UTC)
    captured = {
        "young": now.isoformat(),
        "old": (now - timedelta(seconds=31)).isoformat(),
        "no-now": None,
        "mixed": now.isoformat(),
    }
    messages = [{"id": message_id, "now": at} for message_id, at in captured.items()]
    messages.append({"id": "mixed", "now": "2024-06-01T00:00:00.000+00:00"})  # one of its requests is old
    requests = [SimpleNamespace(id=message_id) for message_id in [*captured, "undecodable"]]
    with override_settings(INGESTION_JOURNAL_GRACE_SECONDS=60):
        assert tasks._aging(requests, messages) == ["old", "no-now", "mixed", "undecodable"]
    with override_settings(INGESTION_JOURNAL_GRACE_SECONDS=0):
        assert tasks._aging(requests, messages) == [*captured, "undecodable"]
