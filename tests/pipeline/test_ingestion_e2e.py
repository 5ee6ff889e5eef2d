"""Capture -> Redis -> real Celery worker -> ClickHouse, end to end, including the failures
the delivery promise is about: SDK retries, ClickHouse outages, a worker killed mid-batch."""

import time
import uuid

import orjson
import pytest
from django.db import connection
from kombu import Connection

from bklog_app.models import DeadLetter, IngestionWarning
from pipeline.governance import definitions
from pipeline.ingestion import dedup, publish, status
from pipeline.ingestion.batch import ingest_messages
from pipeline.ingestion.message import EVENTS_HEADER, INGEST_QUEUE, INGEST_TASK_NAME, to_wire
from pipeline.ingestion.tasks import ingest_batch
from pipeline.redis import _client_for, get_redis
from pipeline.storage.events import count_events, list_events
from tests.conftest import SERVERS
from tests.factories import wait_for_events
from tests.ops.processes import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def post_batch(client, token, events, **extra):
    body = {"api_key": token, "batch": events, **extra}
    return client.post("/batch/", data=orjson.dumps(body), content_type="application/json")


def make_events(n: int, prefix: str = "user", **fields) -> list[dict]:
    return [
        {"event": "page", "distinct_id": f"{prefix}-{i}", "uuid": str(uuid.uuid4()), "properties": {"i": i}, **fields}
        for i in range(n)
    ]


def assert_stored_exactly_once(project_id: int, sent: list[dict], timeout: float = 60) -> None:
    stored = wait_for_events(project_id, len(sent), timeout=timeout)
    uuids = [row["uuid"] for row in stored]
    assert len(uuids) == len(set(uuids)), "an event was stored twice"
    assert sorted(uuids) == sorted(e["uuid"] for e in sent)


def test_batch_is_stored_with_uuids_and_milliseconds(client, project, celery_worker):
    events = make_events(5)
    for i, event in enumerate(events, start=1):
        event["timestamp"] = f"2024-03-01T10:00:00.{i:03d}Z"
    response = post_batch(client, project.api_token, events)
    assert response.status_code == 200, response.content
    assert response.json() == {"status": 1}

    stored = wait_for_events(project.id, 5)
    by_uuid = {e["uuid"]: e for e in stored}
    assert set(by_uuid) == {e["uuid"] for e in events}, (project.id, stored)
    for sent in events:
        row = by_uuid[sent["uuid"]]
        assert row["timestamp"] == sent["timestamp"]
        assert row["properties"]["i"] == sent["properties"]["i"]
        assert row["distinct_id"] == sent["distinct_id"]
        assert row["person_id"]  # persons are resolved for every event


def test_same_batch_sent_twice_is_stored_once(client, project, celery_worker):
    events = make_events(20)
    assert post_batch(client, project.api_token, events).status_code == 200
    assert post_batch(client, project.api_token, events).status_code == 200
    assert_stored_exactly_once(project.id, events)
    # a third copy, after the first two landed, is still a duplicate
    assert post_batch(client, project.api_token, events).status_code == 200
    marker = make_events(1, prefix="marker")
    post_batch(client, project.api_token, marker)
    wait_for_events(project.id, 21)
    assert count_events(project.id) == 21


def test_clickhouse_outage_loses_nothing(client, project, celery_worker, servers):
    clickhouse = servers["clickhouse"]
    before = make_events(10, prefix="before")
    assert post_batch(client, project.api_token, before).status_code == 200
    wait_for_events(project.id, 10)

    clickhouse.stop()
    during = []
    try:
        for n in range(5):
            batch = make_events(10, prefix=f"during-{n}")
            assert post_batch(client, project.api_token, batch).status_code == 200
            during += batch
            time.sleep(0.3)
        time.sleep(2)  # the worker is now retrying against a ClickHouse that is down
    finally:
        clickhouse.start()
    assert_stored_exactly_once(project.id, before + during)


@pytest.mark.single_node
def test_worker_killed_mid_batch_loses_nothing_and_stores_nothing_twice(project, servers, make_worker):
    """SIGKILL an ingestion worker while its batch is half done (rows claimed, INSERT failing
    because ClickHouse is down); a new worker gets the unacknowledged messages back after the
    visibility timeout and stores each event once."""
    broker = servers["redis"].url[:-1] + "3"  # a broker database of its own: no other worker
    worker = make_worker("ingestion", CELERY_BROKER_URL=broker)
    clickhouse = servers["clickhouse"]
    sent: list[dict] = []
    clickhouse.stop()
    try:
        with Connection(broker) as connection:
            for n in range(6):
                events = make_events(25, prefix=f"kill-{n}")
                sent += events
                ingest_batch.apply_async(
                    kwargs={"token": project.api_token, "project_id": project.id, "events": events,
                            "ip": "127.0.0.1", "now": "2024-06-01T00:00:00.000+00:00", "sent_at": None},
                    connection=connection,
                )  # fmt: skip
        deadline = time.monotonic() + 30
        while "dependency down" not in worker.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "dependency down" in worker.log.read_text(), worker.tail()
        worker.kill()
    finally:
        clickhouse.start()
    assert count_events(project.id) == 0
    make_worker("ingestion", CELERY_BROKER_URL=broker)
    assert_stored_exactly_once(project.id, sent, timeout=90)


def test_a_broken_event_is_dead_lettered_and_the_rest_stored(project):
    good = make_events(3)
    broken = {"event": "page", "uuid": str(uuid.uuid4()), "properties": {}}  # no distinct_id
    message = {"id": "m-1", "token": project.api_token, "project_id": project.id, "ip": None,
               "now": "2024-06-01T00:00:00.000+00:00", "sent_at": None, "events": [*good, broken]}  # fmt: skip
    report = ingest_messages([message])
    assert report.stored == 3
    assert report.dead_lettered == 1
    letter = DeadLetter.objects.get(project=project)
    assert letter.kind == "event"
    assert letter.step == "plugins"
    assert "distinct_id" in letter.error
    assert letter.payload == broken
    assert letter.context["token"] == project.api_token


def test_a_stored_batch_marks_its_messages_done_and_records_its_volumes_and_status(project):
    """The writes that follow the INSERT, sent to Redis together (pipeline/ingestion/batch.py)."""
    events = make_events(3)
    for i, event in enumerate(events):
        event["timestamp"] = f"2024-06-01T00:00:0{i}.000Z"
    message = {"id": str(uuid.uuid4()), "token": project.api_token, "project_id": project.id, "ip": None,
               "now": "2024-06-01T00:00:05.000+00:00", "sent_at": None, "events": events}  # fmt: skip
    redis = get_redis()
    redis.delete(status.LAST_INGESTED_KEY, status.LATEST_EVENT_TS_KEY)
    assert ingest_messages([message]).stored == 3
    assert redis.get(dedup._done_key(message["id"])) == b"1"
    assert definitions.volumes(project.id, ["page"]) == {"page": 3}
    assert int(redis.get(status.LATEST_EVENT_TS_KEY)) == 1_717_200_002_000
    assert float(redis.get(status.LAST_INGESTED_KEY)) > time.time() - 60

    redis.delete(status.LAST_INGESTED_KEY)
    assert ingest_messages([{**message, "id": str(uuid.uuid4())}]).duplicates == 3  # nothing stored
    assert redis.get(status.LAST_INGESTED_KEY) is None
    assert definitions.volumes(project.id, ["page"]) == {"page": 3}


def test_invalid_uuid_reaching_the_worker_is_dropped_with_a_warning(project):
    message = {"id": "m-2", "token": project.api_token, "project_id": project.id, "ip": None,
               "now": "2024-06-01T00:00:00.000+00:00", "sent_at": None,
               "events": [{"event": "e", "distinct_id": "d", "uuid": "nope"}]}  # fmt: skip
    report = ingest_messages([message])
    assert report.stored == 0 and report.dropped == 1
    assert IngestionWarning.objects.filter(project=project, type="skipping_event_invalid_uuid").count() == 1


def test_unknown_token_at_ingestion_is_dropped(project):
    message = {"id": "m-3", "token": "phc_gone", "project_id": None, "ip": None,
               "now": "2024-06-01T00:00:00.000+00:00", "sent_at": None, "events": make_events(2)}  # fmt: skip
    report = ingest_messages([message])
    assert report.dropped == 2 and report.stored == 0
    assert list_events(project.id) == []


def publish_ingest(broker: str, project, events: list[dict]) -> None:
    with Connection(broker) as connection:
        ingest_batch.apply_async(
            kwargs={"token": project.api_token, "project_id": project.id, "events": events,
                    "ip": "127.0.0.1", "now": "2024-06-01T00:00:00.000+00:00", "sent_at": None},
            connection=connection,
        )  # fmt: skip


@pytest.mark.single_node
@pytest.mark.parametrize(
    ("batch_seconds", "timeout"),
    [("3", 90), ("600", 60)],
    ids=["flush-timer", "linger-timer"],
)
def test_worker_keeps_ingesting_after_the_broker_restarts(project, servers, make_worker, batch_seconds, timeout):
    """Redis goes away and comes back while an ingestion worker holds messages in its batch
    buffer: the worker reconnects and flushes them, and one message sent afterwards (not a
    stream that would fill a batch) is stored too, each event once.

    Celery clears its timers when the broker connection drops; a worker that kept the dead
    flush timer would keep these messages until its 1,000th (flush_every here), and with a
    visibility timeout of an hour and no other worker on this broker database, nothing else
    would deliver them. With a flush interval of 600 s, only the group commit's linger timer,
    re-armed after the reconnect, stores them within the test's wait."""
    redis = servers["redis"]
    broker = redis.url[:-1] + "4"  # a broker database of its own: no other worker
    make_worker(
        "ingestion",
        CELERY_BROKER_URL=broker,
        INGESTION_BATCH_SECONDS=batch_seconds,
        INGESTION_BATCH_LINGER_SECONDS="3",
        INGESTION_BATCH_MESSAGES="1000",
        CELERY_VISIBILITY_TIMEOUT="3600",
    )
    sent = make_events(3, prefix="warm-up")
    publish_ingest(broker, project, sent)
    wait_for_events(project.id, 3)
    held = make_events(4, prefix="held")
    publish_ingest(broker, project, held)
    sent += held
    time.sleep(0.5)  # delivered into the buffer, well before its 3 s linger
    redis.stop()
    time.sleep(2)
    redis.start()
    after = make_events(4, prefix="after")
    publish_ingest(broker, project, after)
    sent += after
    assert_stored_exactly_once(project.id, sent, timeout=timeout)


def test_a_batch_is_cut_at_its_event_limit(project, servers, make_worker):
    """INGESTION_BATCH_EVENTS cuts a batch before its message limit or its time is reached: with
    a 60 s flush interval (and linger) and room for 1,000 messages, three messages of 4 events
    pass a limit of 10 and are stored at once; a fourth, alone under the limit, waits."""
    broker = servers["redis"].url[:-1] + "5"  # a broker database of its own: no other worker
    make_worker(
        "ingestion",
        CELERY_BROKER_URL=broker,
        INGESTION_BATCH_SECONDS="60",
        INGESTION_BATCH_LINGER_SECONDS="60",
        INGESTION_BATCH_MESSAGES="1000",
        INGESTION_BATCH_EVENTS="10",
    )
    sent = []
    for n in range(3):
        batch = make_events(4, prefix=f"cut-{n}")
        publish_ingest(broker, project, batch)
        sent += batch
    assert_stored_exactly_once(project.id, sent, timeout=40)
    publish_ingest(broker, project, make_events(4, prefix="waits"))
    time.sleep(2)
    assert count_events(project.id) == 12


@pytest.mark.skipif("postgres" not in SERVERS, reason="restarts the PostgreSQL server of the test run")
@pytest.mark.parametrize("health_checks", ["true", "false"])
def test_ingestion_reconnects_when_postgresql_restarts(project, servers, make_worker, health_checks):
    """PostgreSQL restarts (an upgrade, a failover) while an ingestion worker keeps its
    connection between batches. With DATABASE_CONN_HEALTH_CHECKS the next batch checks the
    connection first and opens a new one. Without it (or when the restart comes in the middle
    of a batch) the batch fails on the dead connection, and its retries must open a new one
    instead of failing on the same one until INGESTION_RETRY_MAX_SECONDS (120 s in the tests)
    sends the messages back to the queue."""
    broker = servers["redis"].url[:-1] + "9"  # a broker database of its own: no other worker
    # Every batch reads the project's plugin chain from the database, outside a transaction.
    worker = make_worker(
        "ingestion",
        CELERY_BROKER_URL=broker,
        PLUGIN_CHAIN_CACHE_SECONDS="0",
        DATABASE_CONN_HEALTH_CHECKS=health_checks,
    )
    sent = make_events(3, prefix="restart")
    publish_ingest(broker, project, sent)
    wait_for_events(project.id, len(sent))
    # The batch writes to PostgreSQL after its INSERT too (definitions, docs/governance.md):
    # restarting before it ends would be the mid-batch case, which retries under either setting.
    wait_until(lambda: "ingested batch" in worker.log.read_text(), 30, "the first batch's end", worker.tail)

    servers["postgres"].restart()
    connection.close()  # this process's connection died with the server too
    after = make_events(3, prefix="restart")  # distinct ids the worker has cached
    publish_ingest(broker, project, after)
    assert_stored_exactly_once(project.id, sent + after, timeout=60)
    log = worker.log.read_text()
    # With health checks the batch never sees the dead connection; without, it retries once.
    assert ("dependency down, retrying ingestion batch" in log) == (health_checks == "false")
    assert "messages requeued" not in log


def test_the_event_limit_counts_a_message_by_its_events_header(project, servers, make_worker):
    """Capture writes how many events a message holds in a header (message.EVENTS_HEADER), and
    the consumer counts by it without decoding the body: one message whose header says 10 is cut
    at once at a limit of 10."""
    broker = servers["redis"].url[:-1] + "5"
    make_worker(
        "ingestion",
        CELERY_BROKER_URL=broker,
        INGESTION_BATCH_SECONDS="60",
        INGESTION_BATCH_LINGER_SECONDS="60",
        INGESTION_BATCH_MESSAGES="1000",
        INGESTION_BATCH_EVENTS="10",
    )
    events = make_events(1, prefix="header")
    kwargs = to_wire([{"token": project.api_token, "project_id": project.id, "events": events, "ip": "127.0.0.1",
                       "now": "2024-06-01T00:00:00.000+00:00", "sent_at": None}])  # fmt: skip
    raw = publish.task_message(INGEST_TASK_NAME, INGEST_QUEUE, kwargs, "test", headers={EVENTS_HEADER: 10})
    _client_for(broker).lpush(INGEST_QUEUE, raw)
    assert_stored_exactly_once(project.id, events, timeout=40)
