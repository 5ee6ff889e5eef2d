"""A renewable Redis lock per export: one run at a time, and a dead run's lock lapses.

Built on pipeline.locks (same keys, same compare-and-delete release); what it adds is `renew`,
which extends the lock only while it still holds our token, so a run that stalled past its TTL
learns that it lost the export and stops before writing anything more.
"""

from django.conf import settings

from pipeline import locks
from pipeline.redis import get_redis


def lock_name(kind: str, export_id: int) -> str:
    return f"exports:{kind}:{export_id}"


class Lease:
    def __init__(self, name: str, token: str, ttl: float):
        self.name, self.token, self.ttl = name, token, ttl

    @classmethod
    def take(cls, name: str, ttl: float | None = None) -> "Lease | None":
        ttl = float(ttl if ttl is not None else settings.EXPORT_LOCK_TTL_SECONDS)
        token = locks.acquire(name, ttl)
        return None if token is None else cls(name, token, ttl)

    def renew(self) -> bool:
        """Extend the lock by its TTL; False if it lapsed and may belong to another run now."""
        return locks.renew(self.name, self.token, self.ttl)

    def release(self) -> None:
        locks.release(self.name, self.token)


def held_for(name: str) -> float | None:
    """Seconds until someone's lock on `name` lapses; None if nobody holds it."""
    remaining_ms = get_redis().pttl(locks.PREFIX + name)
    if remaining_ms == -2:
        return None
    return max(remaining_ms, 0) / 1000 if remaining_ms >= 0 else float(settings.EXPORT_LOCK_TTL_SECONDS)


def wait_for_lock(name: str) -> float | None:
    """For a copy that found `name` locked: seconds until it should look again (when the lock
    would lapse if its holder died), or None when another copy is already waiting for it, so
    that redelivered or repeated messages leave one waiter, not a crowd."""
    countdown = (held_for(name) or 0) + 1
    if not locks.claim_once(f"{name}:waiter", ttl=countdown):
        return None
    return countdown
