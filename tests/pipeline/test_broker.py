"""The workers' Redis transport (pipeline/broker.py): kombu's acknowledgement emulation, with
the same keys and contents, on one reused client, a bulk acknowledgement that the ingestion
consumer settles a stored batch with (pipeline/ingestion/tasks.py `acknowledge_in_bulk`), and
capture messages left undecoded until their batch runs (pipeline/ingestion/packed.py)."""

import json

import pytest
from kombu import Connection

from bklog_app.celery import app
from bklog_app.unacked_refresh import held_tags
from pipeline import unsettled
from pipeline.broker import RedisTransport, SentinelTransport, transport_for
from pipeline.ingestion.message import EVENTS_HEADER, INGEST_TASK_NAME, to_wire
from pipeline.ingestion.packed import pack
from pipeline.ingestion.publish import task_message
from pipeline.ingestion.tasks import Buffered, acknowledge_in_bulk
from pipeline.redis import _client_for


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "pipeline.broker:RedisTransport"),
        ("rediss://cache.internal:6380/1", "pipeline.broker:RedisTransport"),
        ("sentinel://10.0.0.1:26379;sentinel://10.0.0.2:26379/0", "pipeline.broker:SentinelTransport"),
        ("amqp://guest@localhost//", None),
        ("memory://", None),
    ],
)
def test_redis_and_sentinel_urls_get_this_transport_and_others_kombus(url, expected):
    assert transport_for(url) == expected


def test_the_celery_app_connects_through_it():
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, RedisTransport | SentinelTransport)


@pytest.fixture
def consumer(own_redis):
    """A queue with five messages delivered and held unacknowledged, as a worker holds them."""
    with Connection(own_redis.url, transport=transport_for(own_redis.url)) as connection:
        queue = connection.SimpleQueue("broker-test")
        for n in range(5):
            queue.put({"n": n})
        messages = [queue.get(timeout=5) for _ in range(5)]
        yield queue, messages
        queue.close()


def test_a_held_message_is_recorded_as_kombu_records_it_and_restored_whole(own_redis, consumer):
    queue, messages = consumer
    client = _client_for(own_redis.url)
    tags = [message.delivery_tag for message in messages]
    assert sorted(client.hkeys("unacked")) == sorted(tag.encode() for tag in tags)
    assert sorted(member.decode() for member in client.zrange("unacked_index", 0, -1)) == sorted(tags)
    payload, _exchange, routing_key = json.loads(client.hget("unacked", tags[0]))
    assert payload["properties"]["delivery_tag"] == tags[0]
    assert routing_key == "broker-test"

    # kombu's restore of a dead consumer's messages reads the entries back onto the queue.
    client.zadd("unacked_index", dict.fromkeys(tags, 1))  # as if delivered long ago
    queue.consumer.channel.qos.restore_visible(num=10, interval=1)
    assert client.hlen("unacked") == 0
    assert client.llen("broker-test") == 5
    with Connection(own_redis.url, transport=transport_for(own_redis.url)) as connection:
        again = connection.SimpleQueue("broker-test")
        assert sorted(again.get(timeout=5).payload["n"] for _ in range(5)) == [0, 1, 2, 3, 4]
        again.close()


def test_one_client_serves_every_acknowledgement(consumer):
    queue, messages = consumer
    qos = queue.consumer.channel.qos
    client = qos._own_client()
    messages[0].ack()
    assert qos._own_client() is client


def test_bulk_acknowledgement_clears_the_hash_the_index_and_the_channel(own_redis, consumer):
    queue, messages = consumer
    client = _client_for(own_redis.url)
    requests = [Buffered(None, message, message.ack_log_error, message.reject_log_error) for message in messages]
    requests[0].acknowledge()  # settled already: left alone

    assert acknowledge_in_bulk(requests) == []
    assert all(request.settled for request in requests)
    assert client.hlen("unacked") == 0
    assert client.zcard("unacked_index") == 0
    assert held_tags(queue.consumer.channel.qos) == []


def test_a_failed_bulk_acknowledgement_leaves_the_messages_to_be_restored(own_redis, consumer):
    """As a failed single ack (pipeline/unsettled.py): the channel still holds them, but the
    refresher stops scoring them, so kombu restores them after the visibility timeout."""
    queue, messages = consumer
    tags = [message.delivery_tag for message in messages]
    requests = [Buffered(None, message, message.ack_log_error, message.reject_log_error) for message in messages]
    own_redis.stop()
    try:
        assert acknowledge_in_bulk(requests) == []
    finally:
        own_redis.start()
    assert all(request.settled for request in requests)
    assert sorted(held_tags(queue.consumer.channel.qos)) == sorted(tags)
    assert unsettled.still_held(tags) == []
    assert _client_for(own_redis.url).hlen("unacked") == 5


def test_messages_of_another_transport_are_left_to_acknowledge_one_by_one(own_redis):
    with Connection(own_redis.url) as connection:  # kombu's own transport: no ack_many
        queue = connection.SimpleQueue("plain")
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        request = Buffered(None, message, message.ack_log_error, message.reject_log_error)
        assert acknowledge_in_bulk([request]) == [request]
        request.acknowledge()
        assert _client_for(own_redis.url).hlen("unacked") == 0
        queue.close()


def test_a_capture_message_is_received_undecoded_and_its_batch_decodes_it(own_redis):
    parts = [{"token": "t", "project_id": 1, "events": [{"event": "e", "distinct_id": "d"}] * 3, "ip": None,
              "now": "2026-12-05T00:00:00Z", "sent_at": None}]  # fmt: skip
    raw = task_message(INGEST_TASK_NAME, "capture-test", to_wire(parts), "()", headers={EVENTS_HEADER: 3})
    _client_for(own_redis.url).lpush("capture-test", raw)
    with Connection(own_redis.url, transport=transport_for(own_redis.url)) as connection:
        queue = connection.SimpleQueue("capture-test")
        queue.put({"n": 1}, compression="zlib")  # any other message: decoded on receipt, as kombu does
        captured, other = queue.get(timeout=5), queue.get(timeout=5)

        assert captured.body is None  # neither base64-decoded nor decompressed in the main process
        assert captured.headers["compression"] == "application/x-gzip"
        packed, events = pack(captured)
        assert events == 3
        assert packed.kwargs == to_wire(parts)
        assert other.payload == {"n": 1}
        captured.ack()
        other.ack()
        queue.close()
