"""The capture journal: every accepted message is on record until it is durably handled.

Why. kombu's Redis transport takes a message off the queue with BRPOP and only then, in a
second command, records it among the unacknowledged ones. A worker killed between the two, or
a Redis that goes away between them, leaves the message nowhere: not in the queue, not
unacknowledged, so the visibility timeout never brings it back. The fault suite lost a request's
events that way (Redis stopped under load). A 200 from capture promises the events will be
stored or dead-lettered, so capture does not rely on the queue alone.

How. The script that LPUSHes a capture message onto the `ingestion` queue also records it here,
atomically: `bklog:ingest:journal` (sorted set, message id -> publish time in ms) and
`bklog:ingest:journal:messages` (hash, message id -> the message as pushed). An ingestion batch
refreshes its messages' entries each time it starts on them, and forgets them once every event
is stored, a duplicate or dead-lettered. The sweeper
(`bklog.ingestion.sweep_journal`, on the `scheduled` queue) looks at entries older than
INGESTION_JOURNAL_GRACE_SECONDS (default: the visibility timeout plus the retry budget plus a
minute, so a message that is only slow is never touched): one still in the queue or among the
unacknowledged is left alone; one in neither was lost, and is published again as a new message
(new id: if the lost one had claimed some uuids, those claims keep the copy from storing them
twice). A message kombu requeued is pushed back re-encoded, so the queue scan would miss it: a
batch that requeues its messages restarts their grace period, and if one still waits longer than
that it is published twice, which dedup makes harmless.
"""

from __future__ import annotations

import time

import orjson
import structlog
from django.conf import settings

from pipeline.redis import _client_for

logger = structlog.get_logger(__name__)

JOURNAL_KEY = "bklog:ingest:journal"
MESSAGES_KEY = "bklog:ingest:journal:messages"
UNACKED_KEY = "unacked"  # kombu's Redis transport: delivery tag -> message, while unacknowledged
SWEEP_BATCH = 500
# Above this many messages waiting, a queue scan per entry costs too much: the sweep waits for
# the backlog to shrink (a message in a long backlog is almost surely in it).
MAX_QUEUE_SCAN = 50_000

# KEYS: queue, journal, messages. ARGV: message, message id, now (ms).
RECORD_AND_PUSH = """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
"""


def broker():
    return _client_for(settings.CELERY_BROKER_URL)


def now_ms() -> int:
    return int(time.time() * 1000)


def touch(message_ids: list[str]) -> None:
    """A batch starts on these messages: their grace period starts again."""
    if message_ids:
        broker().zadd(JOURNAL_KEY, dict.fromkeys(message_ids, now_ms()), xx=True)


def forget(message_ids: list[str]) -> None:
    """The messages are durably handled: drop them from the journal."""
    if not message_ids:
        return
    pipe = broker().pipeline(transaction=True)
    pipe.zrem(JOURNAL_KEY, *message_ids)
    pipe.hdel(MESSAGES_KEY, *message_ids)
    pipe.execute()


def sweep(queue: str, republish, *, grace_seconds: float | None = None) -> dict[str, int]:
    """Publish again (with `republish(raw) -> new id`) every journal entry older than the grace
    period that is neither queued nor unacknowledged. Returns counts for the log."""
    grace = settings.INGESTION_JOURNAL_GRACE_SECONDS if grace_seconds is None else grace_seconds
    client = broker()
    cutoff = now_ms() - int(grace * 1000)
    old = client.zrangebyscore(JOURNAL_KEY, "-inf", cutoff, start=0, num=SWEEP_BATCH)
    counts = {"old": len(old), "pending": 0, "republished": 0, "gone": 0}
    if not old:
        return counts
    if client.llen(queue) > MAX_QUEUE_SCAN:
        counts["pending"] = len(old)
        logger.info("journal sweep waits for the ingestion backlog to shrink", old=len(old))
        return counts
    for message_id, raw in zip(old, client.hmget(MESSAGES_KEY, old), strict=True):
        message_id = message_id.decode()
        if raw is None:
            forget([message_id])
            counts["gone"] += 1
        elif _waiting(client, queue, raw):
            counts["pending"] += 1
        else:
            new_id = republish(raw)
            forget([message_id])
            counts["republished"] += 1
            logger.warning(
                "a captured message was neither queued nor being processed; published it again",
                message_id=message_id,
                new_message_id=new_id,
            )
    return counts


def _waiting(client, queue: str, raw: bytes) -> bool:
    """Still in the queue, or delivered and not yet acknowledged (kombu's unacked hash)."""
    tag = orjson.loads(raw).get("properties", {}).get("delivery_tag")
    if tag and client.hexists(UNACKED_KEY, tag):
        return True
    return client.lpos(queue, raw) is not None
