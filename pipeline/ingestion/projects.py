"""Step 1: the project an event belongs to, from its capture token, cached briefly per process."""

import time
from dataclasses import dataclass

from bklog_app.models import Project

CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class ProjectInfo:
    id: int
    anonymize_ips: bool
    rate_limit_per_minute: int | None


_cache: dict[str, tuple[float, ProjectInfo | None]] = {}


def project_for_token(token: str) -> ProjectInfo | None:
    now = time.monotonic()
    hit = _cache.get(token)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    row = Project.objects.filter(api_token=token).values_list("id", "anonymize_ips", "rate_limit_per_minute").first()
    info = ProjectInfo(*row) if row else None
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[token] = (now, info)
    return info


def project_by_id(project_id: int) -> ProjectInfo | None:
    row = Project.objects.filter(id=project_id).values_list("id", "anonymize_ips", "rate_limit_per_minute").first()
    return ProjectInfo(*row) if row else None


def forget(token: str | None = None) -> None:
    """Drop cached lookups (all, or one token): after a token rotation or a project change."""
    if token is None:
        _cache.clear()
    else:
        _cache.pop(token, None)
