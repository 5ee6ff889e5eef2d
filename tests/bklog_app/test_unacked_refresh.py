"""Workers keep the messages they hold fresh in kombu's unacked index (bklog_app/unacked_refresh.py):
a SIGKILLed worker's messages are stored by another worker once the visibility timeout passes,
a live worker that holds a batch longer than the timeout is never handed a second copy, and the
refresh outlives a Redis outage."""

import threading
import time

import pytest
from celery import current_app
from django.conf import settings
from django.test import override_settings
from kombu import Connection

from bklog_app.unacked_refresh import UnackedRefresher, held_tags
from pipeline import unsettled
from pipeline.broker import transport_for
from pipeline.celery_tasks import SettlingRequest
from pipeline.ingestion.enqueue import publish_journaled
from pipeline.ingestion.message import INGEST_QUEUE
from pipeline.ingestion.tasks import sweep_journal
from pipeline.queues import Queue, TaskName
from pipeline.redis import _client_for
from tests.pipeline.test_ingestion_e2e import assert_stored_exactly_once
from tests.pipeline.test_journal import capture_kwargs


def wait_until(condition, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.1)


# --- The refresher against a Redis of its own ------------------------------------------------


@pytest.fixture
def held(own_redis):
    """A kombu consumer on own_redis holding one message unacknowledged, as a worker does (on the
    workers' transport, pipeline/broker.py)."""
    with Connection(own_redis.url, transport=transport_for(own_redis.url)) as connection:
        queue = connection.SimpleQueue("refresh-test")
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        yield queue, message
        queue.close()


def refresher_for(own_redis, queue, interval: float = 60) -> UnackedRefresher:
    client = _client_for(own_redis.url)
    return UnackedRefresher(lambda: queue.consumer.channel.qos, client, interval=interval)


def test_held_tags_are_scored_afresh_and_settled_ones_left_out(own_redis, held):
    queue, message = held
    client = _client_for(own_redis.url)
    tag = message.delivery_tag
    assert held_tags(queue.consumer.channel.qos) == [tag]
    client.zadd("unacked_index", {tag: 1})  # as if delivered long ago

    refresher = refresher_for(own_redis, queue)
    assert refresher.refresh() == 1
    assert client.zscore("unacked_index", tag) > 1

    message.ack()
    assert held_tags(queue.consumer.channel.qos) == []
    assert refresher.refresh() == 0
    assert client.zscore("unacked_index", tag) is None


def test_a_tag_restored_meanwhile_is_not_brought_back(own_redis, held):
    queue, message = held
    client = _client_for(own_redis.url)
    client.zrem("unacked_index", message.delivery_tag)  # another worker's restore took it
    assert refresher_for(own_redis, queue).refresh() == 0
    assert client.zscore("unacked_index", message.delivery_tag) is None


def test_a_message_whose_acknowledgement_failed_is_left_to_be_restored(own_redis, held):
    """The ack fails while the consumer lives on: the channel still holds the message, but the
    refresher stops scoring it, so kombu's restore puts it back on its queue."""
    queue, message = held
    client = _client_for(own_redis.url)
    tag = message.delivery_tag
    own_redis.stop()
    message.ack_log_error(unsettled.SETTLE_LOG, unsettled.SETTLE_ERRORS)  # as AckWhenStored settles a stored batch
    own_redis.start()
    assert held_tags(queue.consumer.channel.qos) == [tag]  # kombu still counts it as held
    client.zadd("unacked_index", {tag: 1})  # as if delivered long ago

    refresher = refresher_for(own_redis, queue)
    assert refresher.refresh() == 0
    assert client.zscore("unacked_index", tag) == 1

    queue.consumer.channel.qos.restore_visible(num=10, interval=1)
    assert client.hlen("unacked") == 0
    assert client.llen("refresh-test") == 1


def test_a_task_whose_acknowledgement_failed_is_given_up_too(own_redis):
    """Every task's request settles as the ingestion batches do (SettlingRequest)."""
    app = current_app._get_current_object()
    task = app.tasks[TaskName.PLUGIN_TEST_RUN.value]
    with Connection(own_redis.url) as connection:
        queue = connection.SimpleQueue("refresh-test")
        message = app.amqp.as_task_v2("task-1", task.name, args=(1,))
        queue.put(message.body, headers=message.headers, serializer="json", **message.properties)
        received = queue.get(timeout=5)
        request = SettlingRequest(received, on_ack=received.ack_log_error, app=app, task=task, connection_errors=())
        own_redis.stop()
        request.acknowledge()
        own_redis.start()
        assert request.acknowledged
        assert unsettled.still_held([received.delivery_tag]) == []
        queue.close()


def test_a_tag_given_up_is_forgotten_once_the_channel_no_longer_holds_it():
    unsettled.give_up("t1")
    unsettled.give_up("t2")
    assert unsettled.still_held(["t1", "t3"]) == ["t3"]
    assert unsettled.still_held(["t2"]) == ["t2"]  # t2 left the channel meanwhile: forgotten
    assert unsettled.still_held([]) == []


def test_the_refresh_outlives_a_redis_outage(own_redis, held):
    queue, message = held
    client = _client_for(own_redis.url)
    refresher = refresher_for(own_redis, queue, interval=0.2)
    refresher.start()
    try:
        own_redis.stop()
        time.sleep(1)  # a few refreshes fail meanwhile
        assert refresher.running
        own_redis.start()
        client.zadd("unacked_index", {message.delivery_tag: 1})
        wait_until(lambda: client.zscore("unacked_index", message.delivery_tag) > 1, 30, "no refresh after the outage")
    finally:
        refresher.stop()
    assert not refresher.running


# --- Real workers ------------------------------------------------------------------------------


@pytest.fixture
def broker(servers):
    url = servers["redis"].url[:-1] + "7"  # a broker database of its own: no other worker
    client = _client_for(url)
    client.flushdb()
    with override_settings(CELERY_BROKER_URL=url):
        yield url, client
    client.flushdb()


def hold_everything(redis, messages: int) -> None:
    wait_until(
        lambda: redis.llen(INGEST_QUEUE) == 0 and redis.hlen("unacked") == messages,
        60,
        f"the worker did not take the messages: queue {redis.llen(INGEST_QUEUE)}, unacked {redis.hlen('unacked')}",
    )


@pytest.mark.django_db(transaction=True)
def test_a_killed_workers_messages_are_stored_by_another(project, broker, make_worker):
    url, redis = broker
    sent = [capture_kwargs(project, 3, f"killed-{i}") for i in range(4)]
    # The batch waits an hour (no linger either): the worker holds every message, unacknowledged, until it dies.
    holder = make_worker(
        "ingestion", CELERY_BROKER_URL=url, INGESTION_BATCH_SECONDS="3600", INGESTION_BATCH_LINGER_SECONDS="3600"
    )
    for kwargs in sent:
        publish_journaled(kwargs)
    hold_everything(redis, len(sent))
    holder.kill()

    make_worker("ingestion", CELERY_BROKER_URL=url)
    events = [event for kwargs in sent for event in kwargs["events"]]
    assert_stored_exactly_once(project.id, events, timeout=settings.CELERY_VISIBILITY_TIMEOUT + 90)
    wait_until(lambda: redis.hlen("unacked") == 0, 30, "messages left unacknowledged")


@pytest.fixture
def watch_pushes(broker, servers):
    """watch_pushes(queue), once in a test: a list that gets every push on `queue` of the broker's
    database from then on (Redis keyspace events: none is missed, however quickly a consumer
    takes the message again). "lpush" is a publish, "rpush" a restore by kombu."""
    url, redis = broker
    server = _client_for(servers["redis"].url)
    before = server.config_get("notify-keyspace-events")["notify-keyspace-events"]
    server.config_set("notify-keyspace-events", "Kl")
    pubsub = redis.pubsub()
    pushes: list[str] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.2)
            if message and message["type"] == "message" and message["data"] in (b"lpush", b"rpush"):
                pushes.append(message["data"].decode())

    listener = threading.Thread(target=listen, daemon=True)

    def watch(queue: str) -> list[str]:
        pubsub.subscribe(f"__keyspace@{url.rsplit('/', 1)[1]}__:{queue}")
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # watching from here on
        listener.start()
        return pushes

    yield watch
    stop.set()
    if listener.is_alive():
        listener.join(5)
    pubsub.close()
    server.config_set("notify-keyspace-events", before)


@pytest.mark.django_db(transaction=True)
def test_a_live_worker_holding_a_batch_past_the_timeout_gets_no_second_copy(project, broker, make_worker, watch_pushes):
    url, redis = broker
    timeout = settings.CELERY_VISIBILITY_TIMEOUT
    queue_pushes = watch_pushes(INGEST_QUEUE)
    # The batch is flushed twice the visibility timeout after its first message came: without the
    # refresh, a restore (this worker's own, every CELERY_UNACKED_RESTORE_INTERVAL) would put the
    # messages back on the queue halfway.
    make_worker(
        "ingestion",
        CELERY_BROKER_URL=url,
        INGESTION_BATCH_SECONDS=str(timeout * 2),
        INGESTION_BATCH_LINGER_SECONDS=str(timeout * 2),
    )
    sent = [capture_kwargs(project, 2, f"held-{i}") for i in range(3)]
    for kwargs in sent:
        publish_journaled(kwargs)
    hold_everything(redis, len(sent))

    events = [event for kwargs in sent for event in kwargs["events"]]
    assert_stored_exactly_once(project.id, events, timeout=timeout * 2 + 60)
    assert queue_pushes.count("lpush") == len(sent)  # capture's publishes
    assert queue_pushes.count("rpush") == 0  # no restore


def test_a_countdown_past_the_timeout_is_not_delivered_twice(broker, make_worker, watch_pushes):
    """A message with an ETA waits, unacknowledged, in the worker that took it: kept fresh, it is
    not handed out again however far its ETA."""
    url, redis = broker
    timeout = settings.CELERY_VISIBILITY_TIMEOUT
    pushes = watch_pushes(Queue.SCHEDULED.value)
    make_worker("scheduled", CELERY_BROKER_URL=url)
    with Connection(url) as connection:
        sweep_journal.apply_async(countdown=timeout * 2, connection=connection)
    wait_until(lambda: redis.hlen("unacked") == 1, 60, "the worker did not take the message")
    wait_until(lambda: redis.hlen("unacked") == 0, timeout * 2 + 60, "the task did not run")
    assert pushes == ["lpush"]  # published once, never restored
