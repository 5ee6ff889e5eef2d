"""Beat on every node, sending on one: a leader lease in Redis (docs/operations.md#cluster-mode).

Each app node runs `celery beat` under its own supervisord, so that losing a node never stops
the periodic schedule. Only the beat that holds the lease `lock:beat:leader` sends; the others
check every BEAT_LEADER_CHECK_SECONDS whether it lapsed. The leader renews it on every tick; a
leader killed outright stops renewing, and within BEAT_LEADER_TTL_SECONDS another beat takes
over. Periodic tasks keep their own once-per-period locks (pipeline/locks.py) besides, so the
hand-over's overlap, if any, runs nothing twice.
"""

import socket

import structlog
from celery.beat import PersistentScheduler
from django.conf import settings

from pipeline import locks
from pipeline.errors import is_outage

logger = structlog.get_logger(__name__)

LEASE = "beat:leader"


class LeaderScheduler(PersistentScheduler):
    """celery beat's file-backed scheduler, sending only while this beat leads."""

    token: str | None = None

    def tick(self, *args, **kwargs) -> float:
        if not self._leads():
            return settings.BEAT_LEADER_CHECK_SECONDS
        return min(super().tick(*args, **kwargs), settings.BEAT_LEADER_CHECK_SECONDS)

    def close(self) -> None:
        if self.token is not None:
            try:
                locks.release(LEASE, self.token)
            except Exception as exc:
                if not is_outage(exc):
                    raise
        super().close()

    def _leads(self) -> bool:
        ttl = settings.BEAT_LEADER_TTL_SECONDS
        try:
            if self.token is not None and locks.renew(LEASE, self.token, ttl):
                return True
            was_leading, self.token = self.token is not None, locks.acquire(LEASE, ttl)
        except Exception as exc:
            if not is_outage(exc):
                raise
            logger.warning("beat cannot reach Redis to check its leadership; not sending", error=str(exc)[:200])
            return False
        if self.token is not None:
            logger.info("this beat leads: it sends the periodic schedule", node=socket.gethostname())
        elif was_leading:
            logger.warning("this beat lost its leadership to another; it stops sending")
        return self.token is not None
