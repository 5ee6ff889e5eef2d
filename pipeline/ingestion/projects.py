"""Step 1: the project an event belongs to, from its capture token.

Lookups are cached in each process. A change to any project (a rotated token, a new rate limit,
`anonymize_ips`) bumps an epoch counter in Redis; every process compares the epoch on each
lookup and drops its cache when it moved, so a rotated token stops working at once everywhere.
"""

import time
from dataclasses import dataclass

from bklog_app.models import Project
from pipeline.redis import get_redis

CACHE_SECONDS = 60.0
EPOCH_KEY = "bklog:projects:epoch"


@dataclass(frozen=True)
class ProjectInfo:
    id: int
    anonymize_ips: bool
    rate_limit_per_minute: int | None


_FIELDS = ("id", "anonymize_ips", "rate_limit_per_minute")
_cache: dict[str, tuple[float, ProjectInfo | None]] = {}
_UNCHECKED = b"\0unchecked"
_epoch: list[bytes | None] = [_UNCHECKED]


def project_for_token(token: str, *, check_epoch: bool = True) -> ProjectInfo | None:
    """The token's project. With check_epoch=False a cached answer is returned without asking
    Redis; the caller must then check that the epoch is still `cached_epoch()` (the capture
    endpoint does, atomically with its publish: pipeline/ingestion/publish.py)."""
    if check_epoch or _epoch[0] is _UNCHECKED:
        _check_epoch()
    now = time.monotonic()
    hit = _cache.get(token)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    row = Project.objects.filter(api_token=token).values_list(*_FIELDS).first()
    info = ProjectInfo(*row) if row else None
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[token] = (now, info)
    return info


def project_by_id(project_id: int) -> ProjectInfo | None:
    row = Project.objects.filter(id=project_id).values_list(*_FIELDS).first()
    return ProjectInfo(*row) if row else None


def forget() -> None:
    """Every process drops its cached lookups (called after a project changes)."""
    _cache.clear()
    get_redis().incr(EPOCH_KEY)


def cached_epoch() -> bytes | None:
    """The epoch the cached lookups are valid for."""
    return _epoch[0]


def note_epoch(epoch: bytes | None) -> None:
    """The epoch moved (seen by someone else than _check_epoch): drop what was cached before it."""
    if epoch != _epoch[0]:
        _cache.clear()
        _epoch[0] = epoch


def _check_epoch() -> None:
    note_epoch(get_redis().get(EPOCH_KEY))
