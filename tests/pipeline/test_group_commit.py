"""Group commit in the ingestion worker (pipeline/ingestion/tasks.py, AckWhenStored): a message
goes to a free pool process after INGESTION_BATCH_LINGER_SECONDS rather than the batch interval,
and what arrives while every process is busy waits for one to return, then goes as one batch,
or, when it is more than a batch, in cuts shared between the processes."""

import time
from collections.abc import Iterator

import orjson
import pytest

from tests.ops.processes import wait_until
from tests.pipeline.test_ingestion_e2e import assert_stored_exactly_once, make_events, publish_ingest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# Far beyond the tests' waits: a message stored in time was not flushed by the interval.
BATCH_SECONDS = "600"


def log_records(log: str) -> Iterator[dict]:
    """The records of a worker logging JSON, one per line; other lines skipped."""
    for line in log.splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict):
            yield record


def batch_sizes(log: str) -> list[int]:
    """The `messages` of each `ingested batch` line."""
    return [record["messages"] for record in log_records(log) if record.get("event") == "ingested batch"]


def grouping_worker(make_worker, broker: str, concurrency: int = 1, **env: str):
    """An ingestion worker on a broker database of its own, logging JSON, whose batches are cut
    by group commit alone: the batch interval and message limit are far beyond the tests."""
    settings = {"INGESTION_BATCH_SECONDS": BATCH_SECONDS, "INGESTION_BATCH_MESSAGES": "1000", **env}
    return make_worker(
        "ingestion", concurrency=concurrency, CELERY_BROKER_URL=broker, LOG_FORMAT="json", LOG_LEVEL="INFO", **settings
    )


def test_a_lone_message_is_stored_without_waiting_for_the_batch_interval(project, servers, make_worker):
    broker = servers["redis"].url[:-1] + "10"  # a broker database of its own: no other worker
    worker = grouping_worker(make_worker, broker)
    first = make_events(1, prefix="lone")
    publish_ingest(broker, project, first)
    assert_stored_exactly_once(project.id, first, timeout=60)
    # The next message, after the first batch returned, gets a linger of its own.
    second = make_events(1, prefix="next")
    publish_ingest(broker, project, second)
    assert_stored_exactly_once(project.id, first + second, timeout=60)
    assert batch_sizes(worker.log.read_text()) == [1, 1]


def test_messages_that_come_while_the_pool_is_busy_go_as_one_batch(project, servers, make_worker):
    """The worker's one pool process is held by a batch retrying against a ClickHouse that is
    down; ten messages come one by one meanwhile, each well past the linger. When the first
    batch returns, the ten go together, without waiting for the batch interval."""
    broker = servers["redis"].url[:-1] + "15"  # a broker database of its own: no other worker
    worker = grouping_worker(make_worker, broker, INGESTION_BATCH_LINGER_SECONDS="0.01")
    clickhouse = servers["clickhouse"]
    sent = make_events(1, prefix="busy")
    clickhouse.stop()
    try:
        publish_ingest(broker, project, sent)
        wait_until(lambda: "dependency down" in worker.log.read_text(), 30, "the first batch's retry", worker.tail)
        for n in range(10):
            events = make_events(1, prefix=f"waiting-{n}")
            publish_ingest(broker, project, events)
            sent += events
            time.sleep(0.1)
    finally:
        clickhouse.start()
    assert_stored_exactly_once(project.id, sent, timeout=120)
    wait_until(lambda: batch_sizes(worker.log.read_text())[1:], 30, "the second batch's line", worker.tail)
    assert batch_sizes(worker.log.read_text()) == [1, 10], worker.tail()


def retrying_batches(log: str) -> set[str]:
    """The task ids of the batches that logged a retry."""
    retry = "dependency down, retrying ingestion batch"
    return {record.get("task_id") for record in log_records(log) if record.get("event") == retry}


def test_a_backlog_is_cut_for_free_processes_and_its_end_shared_between_them(project, servers, make_worker):
    """Both pool processes are held by batches retrying against a ClickHouse that is down while
    30 messages of 100 events arrive. None is handed to the busy pool: they wait in the
    consumer's backlog, and each returning process gets a cut of it, a batch at most
    (INGESTION_BATCH_EVENTS 1,000) and half of what waits at most, never under a tenth of a
    batch: 3,000 events go as 1,000 + 1,000 + 500 + 300 + 100 + 100 (pipeline/ingestion/
    backlog.py). Handed over as they came, they would have gone as three batches of 1,000, the
    last on one process while the other had nothing to do."""
    from redis import Redis

    broker = servers["redis"].url[:-1] + "14"  # a broker database of its own: no other worker
    worker = grouping_worker(
        make_worker, broker, concurrency=2, INGESTION_BATCH_EVENTS="1000", INGESTION_BATCH_LINGER_SECONDS="0.01"
    )
    clickhouse = servers["clickhouse"]
    sent: list[dict] = []
    clickhouse.stop()
    try:
        for n in (1, 2):  # one batch per process, each retrying
            events = make_events(1, prefix=f"holding-{n}")
            publish_ingest(broker, project, events)
            sent += events
            wait_until(
                lambda n=n: len(retrying_batches(worker.log.read_text())) >= n,
                30,
                f"batch {n}'s retry",
                worker.tail,
            )
        for n in range(30):
            events = make_events(100, prefix=f"backlog-{n}")
            publish_ingest(broker, project, events)
            sent += events
        queue = Redis.from_url(broker)
        wait_until(lambda: queue.llen("ingestion") == 0, 30, "the worker to take every message", worker.tail)
        time.sleep(0.5)
    finally:
        clickhouse.start()
    assert_stored_exactly_once(project.id, sent, timeout=120)
    wait_until(lambda: len(batch_sizes(worker.log.read_text())) >= 8, 30, "every batch's line", worker.tail)
    assert sorted(batch_sizes(worker.log.read_text())) == [1, 1, 1, 1, 3, 5, 10, 10], worker.tail()
