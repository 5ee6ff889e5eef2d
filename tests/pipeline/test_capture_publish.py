"""The capture endpoint's own publish (pipeline/ingestion/publish.py) against what Celery writes,
and the epoch guard that replaces a Redis read per request.
"""

import json
import uuid

import orjson
import pytest
from django.conf import settings
from kombu import Connection

from bklog_app.models import Project
from pipeline.ingestion import projects, publish
from pipeline.ingestion.enqueue import publish_journaled
from pipeline.ingestion.message import EVENTS_HEADER, INGEST_QUEUE, INGEST_TASK_NAME, to_wire
from pipeline.ingestion.tasks import ingest_batch
from pipeline.queues import Queue
from pipeline.redis import _client_for, get_redis

pytestmark = pytest.mark.django_db

KWARGS = {
    "token": "phc_x",
    "project_id": 7,
    "events": [{"event": "e", "distinct_id": "d", "properties": {"big": 2**70, "s": "ü"}}],
    "ip": "127.0.0.1",
    "now": "2024-06-01T00:00:00.000+00:00",
    "sent_at": None,
}


def test_capture_publishes_to_the_ingestion_task_by_its_name_and_queue():
    assert (ingest_batch.name, ingest_batch.queue) == (INGEST_TASK_NAME, INGEST_QUEUE)


def test_the_message_is_the_one_apply_async_writes(servers):
    broker = servers["redis"].url[:-1] + "13"  # a database no worker consumes
    scratch = _client_for(broker)
    scratch.delete(Queue.INGESTION.value)
    with Connection(broker) as connection:
        ingest_batch.apply_async(kwargs=KWARGS, connection=connection, compression="zlib")
    [celery_bytes] = scratch.lrange(Queue.INGESTION.value, 0, -1)
    scratch.delete(Queue.INGESTION.value)

    ours = json.loads(publish.task_message(INGEST_TASK_NAME, INGEST_QUEUE, KWARGS, "short"))
    celery = json.loads(celery_bytes)

    assert ours.keys() == celery.keys()
    assert {k: v for k, v in ours.items() if k not in ("body", "headers", "properties")} == {
        k: v for k, v in celery.items() if k not in ("body", "headers", "properties")
    }
    per_message = {"id", "root_id", "origin", "kwargsrepr", "correlation_id", "reply_to", "delivery_tag"}
    assert {k: v for k, v in ours["headers"].items() if k not in per_message} == {
        k: v for k, v in celery["headers"].items() if k not in per_message
    }
    assert ours["headers"]["id"] == ours["headers"]["root_id"] == ours["properties"]["correlation_id"]
    assert {k: v for k, v in ours["properties"].items() if k not in per_message} == {
        k: v for k, v in celery["properties"].items() if k not in per_message
    }
    # Same body, big integers and non-ASCII text included, compressed as Celery compresses it.
    assert ours["headers"]["compression"] == celery["headers"]["compression"] == publish.COMPRESSION
    assert publish.message_body(json.dumps(ours)) == publish.message_body(celery_bytes)


def test_a_message_of_many_events_is_a_fraction_of_their_json():
    events = [{"event": "$pageview", "distinct_id": f"user-{n}", "properties": {"$current_url": "/a", "n": n}}
              for n in range(50)]  # fmt: skip
    kwargs = {**KWARGS, "events": events}
    envelope = json.loads(publish.task_message(INGEST_TASK_NAME, INGEST_QUEUE, kwargs, "short"))
    assert len(envelope["body"]) < len(orjson.dumps(kwargs)) / 3
    assert publish.message_body(json.dumps(envelope))[1] == kwargs


def test_a_guarded_publish_pushes_only_while_the_key_holds(servers):
    redis = _client_for(settings.CELERY_BROKER_URL)
    key, queue = f"test:guard:{uuid.uuid4()}", f"test:queue:{uuid.uuid4()}"
    publish.publish(queue, b"absent", guard=(key, None))
    redis.set(key, b"7")
    publish.publish(queue, b"seven", guard=(key, b"7"))
    with pytest.raises(publish.GuardChanged) as changed:
        publish.publish(queue, b"stale", guard=(key, b"6"))
    assert changed.value.current == b"7"
    assert redis.lrange(queue, 0, -1) == [b"seven", b"absent"]
    redis.delete(key, queue)


def test_a_project_changed_in_another_process_is_not_served_from_the_cache(client, project):
    body = orjson.dumps({"api_key": project.api_token, "event": "e", "distinct_id": "d"})
    assert client.post("/e/", data=body, content_type="application/json").status_code == 200  # now cached
    # Another process rotates the token: the database changes and the epoch moves; this process
    # has not read the epoch since.
    Project.objects.filter(pk=project.pk).update(api_token=f"phc_{uuid.uuid4().hex}")
    get_redis().incr(projects.EPOCH_KEY)

    response = client.post("/e/", data=body, content_type="application/json")

    assert response.status_code == 401, response.content
    assert response.json()["code"] == "invalid_api_key"


def test_capture_writes_how_many_events_a_message_holds(servers, settings):
    """The ingestion consumer sizes its batches by this header without decoding the body."""
    settings.CELERY_BROKER_URL = servers["redis"].url[:-1] + "14"  # a database no other test uses
    scratch = _client_for(settings.CELERY_BROKER_URL)
    scratch.flushdb()
    publish_journaled(to_wire([KWARGS, {**KWARGS, "events": KWARGS["events"] * 3}]))
    [raw] = scratch.lrange(Queue.INGESTION.value, 0, -1)
    scratch.flushdb()
    assert json.loads(raw)["headers"][EVENTS_HEADER] == 4


def _script_calls(redis) -> int:
    """SCRIPT EXISTS, LOAD, ... calls so far (Redis 7 counts each subcommand as `script|<name>`)."""
    stats = redis.info("commandstats")
    return sum(value["calls"] for name, value in stats.items() if name.split("|")[0] == "cmdstat_script")


def test_a_publish_is_one_command_once_redis_knows_the_script(servers):
    redis = _client_for(settings.CELERY_BROKER_URL)
    queue = f"test:queue:{uuid.uuid4()}"
    redis.script_flush()
    publish.publish(queue, b"first")  # Redis answers NOSCRIPT: the script is loaded, the push made
    before = _script_calls(redis)
    publish.publish(queue, b"second")
    assert _script_calls(redis) == before  # no SCRIPT EXISTS before each push
    assert redis.lrange(queue, 0, -1) == [b"second", b"first"]
    redis.delete(queue)


def test_a_push_that_waits_for_replicas_loads_the_script_too(servers, settings):
    redis = _client_for(settings.CELERY_BROKER_URL)
    # One replica more than there are (none on one node, one in the cluster pass): WAIT falls short.
    wanted = redis.info("replication")["connected_slaves"] + 1
    settings.REDIS_WAIT_REPLICAS, settings.REDIS_WAIT_TIMEOUT_MS = wanted, 1
    queue = f"test:queue:{uuid.uuid4()}"
    redis.script_flush()
    with pytest.raises(publish.NotReplicated, match=f"of {wanted} Redis replica"):
        publish.publish(queue, b"unconfirmed")
    assert redis.lrange(queue, 0, -1) == [b"unconfirmed"]  # pushed once, not retried
    redis.delete(queue)
