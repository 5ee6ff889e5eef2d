"""Publish a task message in one Redis command: the capture endpoint's fast path to the broker.

`Task.apply_async` costs about 1.3 ms of CPU per call on the bench machine, twice what the rest of
a capture request costs: kombu's Redis transport builds a new Redis client object for every
publish, Celery writes a repr of every argument into the headers, and signals are sent. Here
Celery still builds the message (`app.amqp.as_task_v2`, protocol 2, so the headers are what this
Celery version writes), and it is wrapped the way kombu's Redis transport wraps it (JSON body,
base64, the envelope that `Channel._put` LPUSHes onto the queue's list), then pushed with a
long-lived redis-py client: about 0.15 ms. Workers cannot tell the difference.

The body is zlib-compressed, as `apply_async(compression="zlib")` writes it (kombu's
"application/x-gzip" header; kombu decompresses before Celery sees it). A capture message's JSON
shrinks four- to sixfold, and it is written to Redis three times (the queue, the journal, kombu's
unacknowledged copy), each time to Redis's append-only file too: the file grew by 3.6 KB per
single-event request on the bench and was rewritten every minute or two, a fork and seconds of
a core each time. A backlog while ClickHouse is down takes as much less memory.

The push is a Lua script. In the same round trip it records the message in the capture journal
(pipeline/ingestion/journal.py says why), and, given a guard, pushes only while a key holds a
value: the capture endpoint uses that to check that no project changed since it cached the
token's project (pipeline/ingestion/projects.py), instead of reading that epoch with a command
of its own.

A broker that is not Redis gets Celery's own publish (`send_task`, pipeline/ingestion/enqueue.py).
"""

import base64
import hashlib
import json
import time
import uuid
import zlib
from typing import Any

import orjson
import redis
from celery import current_app
from django.conf import settings
from redis.exceptions import NoScriptError

from pipeline.ingestion import journal
from pipeline.redis import REDIS_ERRORS

# kombu's Redis transport: the anonymous exchange routes by queue name; priority 0 is the bare list.
_DELIVERY_MODE_PERSISTENT = 2
_RETRY_DELAYS = (0.1, 0.3)  # as apply_async's retry policy: two retries, then the caller answers 503
COMPRESSION = "application/x-gzip"  # kombu's name for zlib
_COMPRESSION_LEVEL = 1  # the fastest: most of what a higher level would save, at half the CPU


def is_redis_broker() -> bool:
    return settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://", "unix://", "sentinel://"))


def task_message(
    task_name: str,
    queue: str,
    kwargs: dict[str, Any],
    kwargsrepr: str,
    task_id: str | None = None,
    headers: dict[str, Any] | None = None,
) -> bytes:
    """The bytes kombu's Redis transport would LPUSH for `apply_async(kwargs=kwargs,
    headers=headers)` of the task named `task_name` on `queue`. By name: the web process need not
    import the task's module."""
    task_id = task_id or str(uuid.uuid4())
    message = current_app.amqp.as_task_v2(
        task_id, task_name, args=(), kwargs=kwargs, argsrepr="()", kwargsrepr=kwargsrepr, ignore_result=True
    )
    body = zlib.compress(_dumps(list(message.body)), _COMPRESSION_LEVEL)  # (args, kwargs, embed)
    envelope = {
        "body": base64.b64encode(body).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {**message.headers, **(headers or {}), "compression": COMPRESSION},
        "properties": {
            **message.properties,
            "delivery_mode": _DELIVERY_MODE_PERSISTENT,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return _dumps(envelope)


def message_body(raw: bytes) -> list:
    """(args, kwargs, embed) of a task message as it sits in a queue: ours, or apply_async's."""
    envelope = orjson.loads(raw)
    body = base64.b64decode(envelope["body"])
    if envelope["headers"].get("compression") == COMPRESSION:
        body = zlib.decompress(body)
    return orjson.loads(body)


class NotReplicated(redis.ConnectionError):
    """The message is on the master, but fewer replicas than REDIS_WAIT_REPLICAS confirmed it
    within REDIS_WAIT_TIMEOUT_MS: a failover now could lose it, so capture must not answer 200.
    An outage like a lost connection (the client sends again; dedup drops the second copy)."""

    def __init__(self, acknowledged: int, wanted: int) -> None:
        super().__init__(
            f"{acknowledged} of {wanted} Redis replica(s) confirmed the message in time "
            "(REDIS_WAIT_REPLICAS, REDIS_WAIT_TIMEOUT_MS): is a replica down or far behind?"
        )


class GuardChanged(Exception):
    """The guard key no longer holds the expected value: nothing was published."""

    def __init__(self, current: bytes | None) -> None:
        super().__init__("the guard key changed")
        self.current = current


# KEYS: guard key, queue, journal, journal messages. ARGV: expected value ("" for absent),
# message, message id ("": not journaled), now (ms). See pipeline/ingestion/journal.py.
_PUSH = """
if KEYS[1] ~= '' then
    local current = redis.call('GET', KEYS[1])
    if (current or '') ~= ARGV[1] then return {0, current or ''} end
end
redis.call('LPUSH', KEYS[2], ARGV[2])
if ARGV[3] ~= '' then
    redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
    redis.call('HSET', KEYS[4], ARGV[3], ARGV[2])
end
return {1}
"""
_PUSH_SHA = hashlib.sha1(_PUSH.encode(), usedforsecurity=False).hexdigest()  # EVALSHA names a script by this
_PUSH_KEYS = 4


def can_guard_with(redis_url: str) -> bool:
    """A guard key must live in the broker's own Redis database for the check to be atomic."""
    return is_redis_broker() and redis_url == settings.CELERY_BROKER_URL


def publish(
    queue: str,
    message: bytes,
    *,
    guard: tuple[str, bytes | None] | None = None,
    journal_id: str | None = None,
) -> None:
    """LPUSH the message onto the queue; retries twice on a connection error, then raises.

    With `guard=(key, expected)`, push only while `key` holds `expected` (None: absent), else
    raise GuardChanged with what it holds now. With `journal_id`, record the message in the
    capture journal (pipeline/ingestion/journal.py) in the same atomic step.
    """
    client = journal.broker()
    guard_key, expected = guard if guard is not None else ("", None)
    replicas = settings.REDIS_WAIT_REPLICAS
    keys_and_args = (
        guard_key,
        queue,
        journal.JOURNAL_KEY,
        journal.MESSAGES_KEY,
        expected or b"",
        message,
        journal_id or "",
        journal.now_ms(),
    )
    for delay in (*_RETRY_DELAYS, None):
        try:
            result, *acknowledged = _push(client, keys_and_args, replicas)
            if result[0] != 1:
                raise GuardChanged(result[1] or None)
            if acknowledged and acknowledged[0] < replicas:
                raise NotReplicated(acknowledged[0], replicas)
            return
        except NotReplicated:
            raise  # pushed already: pushing again would only queue a second copy
        except REDIS_ERRORS:
            if delay is None:
                raise
            time.sleep(delay)


def _push(client, keys_and_args: tuple, replicas: int) -> list:
    """Run the push script by its SHA: one round trip. (redis-py's `Script` object in a pipeline
    asks SCRIPT EXISTS before every pipeline, a second round trip per message.) A Redis that
    does not know the script yet (restarted, failed over, SCRIPT FLUSH) is sent it once."""
    try:
        return _evalsha(client, keys_and_args, replicas)
    except NoScriptError:
        client.script_load(_PUSH)
        return _evalsha(client, keys_and_args, replicas)


def _evalsha(client, keys_and_args: tuple, replicas: int) -> list:
    if not replicas:
        return [client.evalsha(_PUSH_SHA, _PUSH_KEYS, *keys_and_args)]
    # One connection for the push and its WAIT: WAIT counts that connection's writes.
    pipe = client.pipeline(transaction=False)
    pipe.evalsha(_PUSH_SHA, _PUSH_KEYS, *keys_and_args)
    pipe.execute_command("WAIT", replicas, settings.REDIS_WAIT_TIMEOUT_MS)
    return pipe.execute()


def _dumps(value) -> bytes:
    """orjson, or the standard library for what orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False).encode()
