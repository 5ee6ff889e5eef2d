"""kombu's Redis transport, with the per-message bookkeeping of its acknowledgements made cheaper.

Why. kombu emulates acknowledgements on Redis: each delivered message is copied into the
`unacked` hash and its delivery tag scored in `unacked_index` (one MULTI/EXEC), and removed from
both when it is acknowledged (another). kombu builds a new `redis.Redis` client object for each
of those round trips (in redis-py 8 that builds its response-callback table, about a fifth of
the consumer's CPU per message) and writes the hash entry with the standard library's JSON. At
1,000 single-event requests a second the ingestion worker's main process spent about a third of
a core there, most of it in these two steps (`py-spy` on the bench, 2026-12-04).

What changes, and what does not:
- One client per channel, on the channel's own connection pool (the objects kombu made each
  time were interchangeable: same pool, same options).
- The hash entry is written with orjson. It is the same JSON document, without the spaces, and
  kombu reads it back with its own `loads` when it restores the message.
- `QoS.ack_many` acknowledges many delivery tags in one round trip (a ZREM and an HDEL of them
  all, in one MULTI/EXEC). The ingestion consumer settles a stored batch's messages with it
  (pipeline/ingestion/tasks.py).
- A capture message (one with the events header, pipeline/ingestion/message.py) is not decoded
  on receipt: kombu would undo its base64 and decompress it, about 0.5 us of the main process's
  CPU per event, and the ingestion consumer keeps the envelope's body as the queue holds it
  instead (pipeline/ingestion/packed.py), to be decoded in the pool process that runs its batch.
  Its `body` is None; its headers, properties and the `_raw` envelope are kombu's.
The keys, their contents, the restore of a dead worker's messages after the visibility timeout
and the capture journal's reading of `unacked` (pipeline/ingestion/journal.py) are unchanged.

Celery picks these classes through `broker_transport` (bklog_app/celery.py) for `redis://`,
`rediss://` and `sentinel://` broker URLs; any other URL keeps kombu's own transport.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager
from time import time
from urllib.parse import urlparse

import orjson
from kombu.message import Message as BaseMessage
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from pipeline.ingestion.message import EVENTS_HEADER

__all__ = ["Message", "QoS", "RedisTransport", "SentinelTransport", "transport_for"]


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS on one reused client, orjson for the hash, and acknowledgement in bulk."""

    _client = None

    def _own_client(self):
        # Made again if the channel replaced its pool (it drops it when it closes).
        if self._client is None or self._client.connection_pool is not self.channel.pool:
            self._client = self.channel._create_client()
        return self._client

    @contextmanager
    def pipe_or_acquire(self, pipe=None, client=None):
        if pipe is not None:
            yield pipe
        else:
            yield (client or self._own_client()).pipeline()

    def append(self, message, delivery_tag) -> None:
        delivery = message.delivery_info
        entry = orjson.dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: time()}).hset(self.unacked_key, delivery_tag, entry)
            pipe.execute()
        virtual.QoS.append(self, message, delivery_tag)

    def ack_many(self, delivery_tags: Iterable[str]) -> None:
        """Acknowledge every tag in one round trip. Raises what Redis raised, and then the channel
        still holds every one of them (as after a failed `ack`)."""
        tags = list(delivery_tags)
        if not tags:
            return
        with self.pipe_or_acquire() as pipe:
            pipe.zrem(self.unacked_index_key, *tags).hdel(self.unacked_key, *tags)
            pipe.execute()
        for tag in tags:
            virtual.QoS.ack(self, tag)


class Message(virtual.Message):
    """kombu's message, except that a capture message's body is left as the envelope holds it."""

    def __init__(self, payload, channel=None, **kwargs) -> None:
        headers = payload.get("headers") or {}
        properties = payload["properties"]
        if EVENTS_HEADER not in headers or properties.get("body_encoding") != "base64":
            super().__init__(payload, channel, **kwargs)
            return
        self._raw = payload
        BaseMessage.__init__(  # what virtual.Message passes on, without the body to decode
            self,
            body=None,
            channel=channel,
            delivery_tag=properties["delivery_tag"],
            content_type=payload.get("content-type"),
            content_encoding=payload.get("content-encoding"),
            headers={key: value for key, value in headers.items() if key != "compression"},
            properties=properties,
            delivery_info=properties.get("delivery_info"),
            postencode="utf-8",
            **kwargs,
        )
        self.headers = headers  # with its compression, which packed.py reads


class _Channel(kombu_redis.Channel):
    QoS = QoS
    Message = Message


class _SentinelChannel(kombu_redis.SentinelChannel):
    QoS = QoS
    Message = Message


class RedisTransport(kombu_redis.Transport):
    Channel = _Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = _SentinelChannel


_BY_SCHEME = {
    "redis": f"{__name__}:RedisTransport",
    "rediss": f"{__name__}:RedisTransport",
    "sentinel": f"{__name__}:SentinelTransport",
}


def transport_for(broker_url: str) -> str | None:
    """The `broker_transport` for `broker_url`: these classes for Redis and Sentinel URLs, None
    (kombu's choice by the URL's scheme) for anything else. Several `;`-separated URLs (Sentinel
    hosts) share the first one's scheme."""
    scheme = urlparse(broker_url.split(";", 1)[0].strip()).scheme
    return _BY_SCHEME.get(scheme)
