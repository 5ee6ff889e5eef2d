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
from functools import lru_cache
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

    for chunk in _chunks(to_claim):
        won = _script(_CLAIM_SCRIPT)(
            keys=[keys[index] for index in chunk],
            args=[ttl, *(PENDING_PREFIX + items[index].message_id.encode() for index in chunk)],
        )
        for index, claimed in zip(chunk, won, strict=True):
            decisions[index] = bool(claimed)
    confirm([item for item in own_pending if item.uuid in landed])
    return decisions


def confirm(items: Sequence[Claim]) -> None:
    """Mark the uuids stored, once ClickHouse has accepted their INSERT."""
    if not items:
        return
    keys = [_key(item.team_id, item.uuid) for item in items]
    for chunk in _chunks(keys):
        _script(_CONFIRM_SCRIPT)(keys=chunk, args=[settings.INGESTION_DEDUP_WINDOW_SECONDS])


# Claims and confirmations go to Redis as one script call per SCRIPT_KEYS keys rather than a
# command per key: building and parsing a command each was a tenth of an ingestion batch's time.
# The bound keeps each call (which Redis runs atomically) to a millisecond or two.
SCRIPT_KEYS = 1_000

# ARGV[1]: TTL; ARGV[i + 1]: the claim for KEYS[i]. Returns 1 per key claimed, 0 per key taken.
_CLAIM_SCRIPT = """
local won = {}
for i, key in ipairs(KEYS) do
    won[i] = redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1], 'NX') and 1 or 0
end
return won
"""

# ARGV[1]: TTL. Every key becomes STORED ("s").
_CONFIRM_SCRIPT = """
for _, key in ipairs(KEYS) do
    redis.call('SET', key, 's', 'EX', ARGV[1])
end
return 0
"""


def _chunks(items: list) -> list[list]:
    return [items[start : start + SCRIPT_KEYS] for start in range(0, len(items), SCRIPT_KEYS)]


@lru_cache(maxsize=8)
def _registered(client, source: str):
    return client.register_script(source)


def _script(source: str):
    return _registered(get_redis(), source)


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
