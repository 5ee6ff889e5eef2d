"""Store each event uuid once within the dedup window, under at-least-once delivery.

Each uuid has a Redis key, set to "pending by <message id>" (a claim) just before its INSERT.
Once ClickHouse has accepted the INSERT, the message is marked done (one key per message, not
one write per event: a claim by a done message means "stored"). A batch claims each key with
SET NX and, where it is taken, reads what holds it, in the same script call:
- absent: claimed (of batches racing for it, one claims it; the others find it as below);
- pending by another message: stored already if that message is done (an SDK retry, a
  redelivered message), else that message is unacknowledged until it has stored the event (it
  is retried, never dropped, once it has claimed): either way skipping it here loses nothing;
- pending by this same message: stored if the message is done (it died after confirming,
  before its acknowledgement); else an earlier attempt died between claiming and confirming,
  and only ClickHouse knows whether its INSERT landed, so it is asked (rare);
- "stored" (the per-uuid form, still written for that rare case): a duplicate, skipped.
Claims of events dead-lettered after claiming are released, so "done" covers only what landed.
"""

from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

from django.conf import settings
from redis.client import Pipeline

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


def _done_key(message_id: str) -> str:
    return f"bklog:dedup:done:{message_id}"


def claim(items: Sequence[Claim]) -> list[bool]:
    """For each item, True if this batch should insert it."""
    if not items:
        return []
    first: dict[str, int] = {}  # uuid -> its first item: a repeat inside the batch is skipped
    for index, item in enumerate(items):
        first.setdefault(item.uuid, index)
    held: dict[int, bytes | None] = {}  # item -> what held its key, None when claimed now
    for chunk in _chunks(list(first.values())):
        replies = _script(_CLAIM_SCRIPT)(
            keys=[_key(items[index].team_id, items[index].uuid) for index in chunk],
            args=[settings.INGESTION_DEDUP_WINDOW_SECONDS, *(_pending(items[index]) for index in chunk)],
        )
        for index, reply in zip(chunk, replies, strict=True):
            held[index] = None if reply == 1 else reply

    own_pending = [items[index] for index, state in held.items() if state == _pending(items[index])]
    landed: set[str] = set()
    if own_pending:
        done = _done_messages({item.message_id for item in own_pending})
        landed = {item.uuid for item in own_pending if item.message_id in done}
        unknown = [item for item in own_pending if item.message_id not in done]
        if unknown:
            landed |= event_store.existing_uuids({i.team_id for i in unknown}, [i.uuid for i in unknown])

    decisions = [False] * len(items)  # repeats, and keys stored or pending by another message
    for index, state in held.items():
        if state is None:
            decisions[index] = True
        elif state == _pending(items[index]):
            decisions[index] = items[index].uuid not in landed
    _mark_stored([item for item in own_pending if item.uuid in landed])
    return decisions


def _pending(item: Claim) -> bytes:
    return PENDING_PREFIX + item.message_id.encode()


def confirm(items: Sequence[Claim], pipe: Pipeline) -> None:
    """Once ClickHouse has accepted the INSERT of these claims: mark their messages done, in
    `pipe` (the batch's writes after its INSERT, which the caller executes)."""
    for message_id in {item.message_id for item in items}:
        pipe.set(_done_key(message_id), b"1", ex=settings.INGESTION_DEDUP_WINDOW_SECONDS)


def _done_messages(message_ids: set[str]) -> set[str]:
    ids = list(message_ids)
    flags = get_redis().mget([_done_key(message_id) for message_id in ids])
    return {message_id for message_id, flag in zip(ids, flags, strict=True) if flag is not None}


def _mark_stored(items: Sequence[Claim]) -> None:
    """Mark single uuids stored: an earlier attempt's INSERT that landed, found in ClickHouse."""
    keys = [_key(item.team_id, item.uuid) for item in items]
    for chunk in _chunks(keys):
        _script(_CONFIRM_SCRIPT)(keys=chunk, args=[settings.INGESTION_DEDUP_WINDOW_SECONDS])


# Claims go to Redis as one script call per SCRIPT_KEYS keys rather than a
# command per key: building and parsing a command each was a tenth of an ingestion batch's time.
# The bound keeps each call (which Redis runs atomically) to a millisecond or two.
SCRIPT_KEYS = 1_000

# ARGV[1]: TTL; ARGV[i + 1]: the claim for KEYS[i]. Returns, per key, 1 when claimed, else the
# value that holds it (a claim or STORED): the claim and the read of a taken key in one call.
_CLAIM_SCRIPT = """
local replies = {}
for i, key in ipairs(KEYS) do
    if redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1], 'NX') then
        replies[i] = 1
    else
        replies[i] = redis.call('GET', key)
    end
end
return replies
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
