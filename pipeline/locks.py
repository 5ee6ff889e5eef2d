"""Redis NX locks for periodic work, so that a second beat (or a redelivered message) cannot
double-run it (docs/contracts.md#processes-and-queues, SCHEDULE_LOCK_TTL).

Two shapes: `held(name)` guards a run and is released at its end (the TTL only covers a crash);
`claim_once(name, ttl)` marks a period as taken and is never released, so the period's other
senders find it taken until it expires.
"""

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from pipeline.redis import get_redis

PREFIX = "lock:"

# Delete the key only if it still holds our token: a lock that expired and was taken by someone
# else must not be released by us.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


def acquire(name: str, ttl: float | None = None) -> str | None:
    """Take the lock for `ttl` seconds (default SCHEDULE_LOCK_TTL); a token, or None if taken."""
    token = secrets.token_hex(8)
    ttl_ms = int((ttl if ttl is not None else settings.SCHEDULE_LOCK_TTL) * 1000)
    if get_redis().set(PREFIX + name, token, nx=True, px=max(ttl_ms, 1)):
        return token
    return None


def renew(name: str, token: str, ttl: float) -> bool:
    """Extend the lock to `ttl` seconds from now; False if it lapsed and may be someone else's."""
    return bool(get_redis().eval(_RENEW, 1, PREFIX + name, token, int(ttl * 1000)))


def release(name: str, token: str) -> bool:
    return bool(get_redis().eval(_RELEASE, 1, PREFIX + name, token))


@contextmanager
def held(name: str, ttl: float | None = None) -> Iterator[bool]:
    """`with held("x") as acquired:` runs the body either way; `acquired` says if we hold it."""
    token = acquire(name, ttl)
    try:
        yield token is not None
    finally:
        if token is not None:
            release(name, token)


def claim_once(name: str, ttl: float | None = None) -> bool:
    """True for the first caller only, until `ttl` seconds pass."""
    return acquire(name, ttl) is not None
