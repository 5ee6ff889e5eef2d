"""The capture journal: every accepted message is on record until it is durably handled.

Why. kombu's Redis transport takes a message off the queue with BRPOP and only then, in a
second command, records it among the unacknowledged ones. A worker killed between the two, or
a Redis that goes away between them, leaves the message nowhere: not in the queue, not
unacknowledged, so the visibility timeout never brings it back. The fault suite lost a request's
events that way (Redis stopped under load), and a worker SIGKILLed right after a capture lands
in that window often: the freshly pushed message is exactly the one it is handling. A 200 from
capture promises the events will be stored or dead-lettered, so capture does not rely on the
queue alone.

How. The script that LPUSHes a capture message onto the `ingestion` queue also records it here,
atomically: `bklog:ingest:journal` (sorted set, message id -> publish time in ms) and
`bklog:ingest:journal:messages` (hash, message id -> the message as pushed). An ingestion batch
refreshes the entries of its messages captured more than half the grace period ago each time it
starts on them (a younger entry is not old enough for the sweeper yet, and most batches are done
long before), and forgets them once every event is stored, a duplicate or dead-lettered. The
sweeper (`bklog.ingestion.sweep_journal`, on the `scheduled` queue) looks at entries older than
INGESTION_JOURNAL_GRACE_SECONDS and finds each by its delivery tag, which kombu keeps wherever
the message goes: among the unacknowledged
(delivered, buffered, retrying while a dependency is down, or held by a dead worker until the
visibility timeout restores it), or in the queue (as pushed, or re-encoded by kombu after a
requeue or a restore). One found in neither place was lost, and is published again as a new
message (new id: if the lost one had claimed some uuids, those claims keep the copy from storing
them twice). The only moment a live message is in neither place is the instant between BRPOP
and kombu's bookkeeping, so the grace period is short: a message caught in that instant is at
worst published twice, which dedup makes harmless.
"""

from __future__ import annotations

import re
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
# Above this many messages waiting, reading the whole queue costs the sweeper too much: it waits
# for the backlog to shrink (a message in a long backlog is almost surely in it).
MAX_QUEUE_SCAN = 20_000
QUEUE_SCAN_CHUNK = 1_000
_DELIVERY_TAG = re.compile(rb'"delivery_tag":\s*"([^"]+)"')

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


def sweep(queues: str | tuple[str, ...], republish, *, grace_seconds: float | None = None) -> dict[str, int]:
    """Publish again (with `republish(raw) -> new id`) every journal entry older than the grace
    period that is neither in one of the `queues` nor unacknowledged. Returns counts for the log."""
    queues = (queues,) if isinstance(queues, str) else queues
    grace = settings.INGESTION_JOURNAL_GRACE_SECONDS if grace_seconds is None else grace_seconds
    client = broker()
    cutoff = now_ms() - int(grace * 1000)
    old = client.zrangebyscore(JOURNAL_KEY, "-inf", cutoff, start=0, num=SWEEP_BATCH)
    counts = {"old": len(old), "pending": 0, "republished": 0, "gone": 0}
    if not old:
        return counts
    raws = {}
    for message_id, raw in zip(old, client.hmget(MESSAGES_KEY, old), strict=True):
        if raw is None:
            forget([message_id.decode()])
            counts["gone"] += 1
        else:
            raws[message_id.decode()] = raw
    tags = {message_id: _delivery_tag(raw) for message_id, raw in raws.items()}
    missing = _not_unacknowledged(client, tags)
    if missing and sum(client.llen(queue) for queue in queues) > MAX_QUEUE_SCAN:
        counts["pending"] = len(raws)
        logger.info("journal sweep waits for the ingestion backlog to shrink", old=len(old))
        return counts
    if missing:
        # The queue first, then the unacknowledged again: a message that moves from one to the
        # other while we look is seen in the second place.
        queued = set().union(*(_tags_in_queue(client, queue) for queue in queues))
        missing = _not_unacknowledged(client, {m: tags[m] for m in missing if tags[m] not in queued})
    counts["pending"] = len(raws) - len(missing)
    for message_id in missing:
        new_id = republish(raws[message_id])
        forget([message_id])
        counts["republished"] += 1
        logger.warning(
            "a captured message was neither queued nor being processed; published it again",
            message_id=message_id,
            new_message_id=new_id,
        )
    return counts


def _delivery_tag(raw: bytes) -> str:
    return orjson.loads(raw)["properties"]["delivery_tag"]


def _not_unacknowledged(client, tags: dict[str, str]) -> list[str]:
    """The message ids whose delivery tag is not in kombu's unacked hash."""
    pipe = client.pipeline(transaction=False)
    for tag in tags.values():
        pipe.hexists(UNACKED_KEY, tag)
    return [message_id for message_id, held in zip(tags, pipe.execute(), strict=True) if not held]


def _tags_in_queue(client, queue: str) -> set[str]:
    """Every delivery tag in the queue, in whichever encoding the message was pushed: capture's
    own (orjson) or kombu's after a requeue or restore (json, with spaces)."""
    tags = set()
    for start in range(0, client.llen(queue), QUEUE_SCAN_CHUNK):
        for raw in client.lrange(queue, start, start + QUEUE_SCAN_CHUNK - 1):
            tags.update(tag.decode() for tag in _DELIVERY_TAG.findall(raw))
    return tags
