"""Store each event uuid once within the dedup window, under at-least-once delivery.

Each uuid has a Redis key: "pending by <message id>" from just before its INSERT, "stored" once
ClickHouse accepted it. A batch first reads the keys:
- stored: a duplicate (an SDK retry, a redelivered message), skipped;
- pending by another message: that message is unacknowledged until it has stored the event
  (it is retried, never dropped, once it has claimed), so skipping it here loses nothing;
- pending by this same message: an earlier attempt of this message died between claiming and
  confirming; only ClickHouse knows whether its INSERT landed, so it is asked (rare);
- absent: claimed with SET NX; whoever loses the race skips, as above.
"""

from collections.abc import Sequence
from typing import NamedTuple

from django.conf import settings

from pipeline.redis import get_redis
from pipeline.storage import events as event_store

PENDING_PREFIX = b"p:"
STORED = b"s"


class Claim(NamedTuple):
    team_id: int
    uuid: str
    message_id: str


def _key(team_id: int, uuid: str) -> str:
    return f"bklog:dedup:{team_id}:{uuid}"


def claim(items: Sequence[Claim]) -> list[bool]:
    """For each item, True if this batch should insert it."""
    if not items:
        return []
    redis = get_redis()
    ttl = settings.INGESTION_DEDUP_WINDOW_SECONDS
    keys = [_key(item.team_id, item.uuid) for item in items]
    states = redis.mget(keys)

    own_pending = [
        item for item, state in zip(items, states, strict=True) if state == PENDING_PREFIX + item.message_id.encode()
    ]
    landed = (
        event_store.existing_uuids({i.team_id for i in own_pending}, [i.uuid for i in own_pending])
        if own_pending
        else set()
    )

    decisions: list[bool] = []
    seen_in_batch: set[str] = set()
    to_claim: list[int] = []
    for index, (item, state) in enumerate(zip(items, states, strict=True)):
        if item.uuid in seen_in_batch or state is None:
            decisions.append(False)  # a repeat inside this batch, or decided below by SET NX
            if state is None and item.uuid not in seen_in_batch:
                to_claim.append(index)
        elif state == PENDING_PREFIX + item.message_id.encode():
            decisions.append(item.uuid not in landed)
        else:
            decisions.append(False)  # stored, or pending by another message
        seen_in_batch.add(item.uuid)

    if to_claim:
        pipe = redis.pipeline(transaction=False)
        for index in to_claim:
            pipe.set(keys[index], PENDING_PREFIX + items[index].message_id.encode(), ex=ttl, nx=True)
        for index, won in zip(to_claim, pipe.execute(), strict=True):
            decisions[index] = bool(won)
    confirm([item for item in own_pending if item.uuid in landed])
    return decisions


def confirm(items: Sequence[Claim]) -> None:
    """Mark the uuids stored, once ClickHouse has accepted their INSERT."""
    if not items:
        return
    ttl = settings.INGESTION_DEDUP_WINDOW_SECONDS
    pipe = get_redis().pipeline(transaction=False)
    for item in items:
        pipe.set(_key(item.team_id, item.uuid), STORED, ex=ttl)
    pipe.execute()


# Delete a key only while it still holds this message's claim.
_RELEASE_SCRIPT = """
for i, key in ipairs(KEYS) do
    if redis.call('GET', key) == ARGV[i] then redis.call('DEL', key) end
end
return 0
"""


def release(items: Sequence[Claim]) -> None:
    """Forget this message's claims on events that were dead-lettered instead of stored, so
    that a replay from the dead-letter store (a new message) can store them."""
    if items:
        keys = [_key(item.team_id, item.uuid) for item in items]
        values = [PENDING_PREFIX + item.message_id.encode() for item in items]
        get_redis().eval(_RELEASE_SCRIPT, len(keys), *keys, *values)
