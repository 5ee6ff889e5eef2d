"""Step 1: the project an event belongs to, from its capture token.

Lookups are cached in each process. A change to any project (a rotated token, a new rate limit,
`anonymize_ips`, an SDK setting) bumps an epoch counter in Redis; every process compares the
epoch on each lookup (an ingestion batch once, in `load_tokens`, for all its lookups) and drops
its cache when it moved, so a rotated token stops working at once everywhere.

The project's ingestion state (pipeline/ingestion/isolation.py) is read with it, from Redis, and
cached alike: a change of state bumps the same epoch, so capture routes by it without a Redis
read of its own per request.

One caller per process asks for a token at a time, and the database is asked by one thread per
process for all the tokens waiting, on a connection it keeps (pipeline/ingestion/token_rows.py).
When a cached answer expires under load, every request of that second would otherwise miss
together (on the bench, 30 new PostgreSQL backends at once and a 300-500 ms stall of every
request, once a minute per web process). An expired answer is renewed in the background, and
every caller, the one that noticed included, is served it meanwhile (a change to the project
would have moved the epoch and emptied the cache, so it is only old, not wrong): with thousands
of projects each sending now and then, most answers are found expired. With nothing cached, the
callers wait for the one lookup.
"""

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace

import structlog

from bklog_app.models import Project
from pipeline import bounded
from pipeline.ingestion import isolation, token_rows
from pipeline.redis import get_redis

logger = structlog.get_logger(__name__)

CACHE_SECONDS = 60.0
# How long a caller with nothing cached waits for another's lookup before making its own.
LOOKUP_WAIT_SECONDS = 5.0
EPOCH_KEY = "bklog:projects:epoch"


@dataclass(frozen=True, slots=True)
class ProjectInfo:
    """What capture and the SDK endpoints need of a project; the SDK settings (bklog_app.models.Project)
    default to a new project's, so a row of the first three fields alone still makes one."""

    id: int
    anonymize_ips: bool
    rate_limit_per_minute: int | None
    autocapture_opt_out: bool = False
    capture_pageview: bool = True
    capture_pageleave: bool = True
    default_identified_only: bool = True
    capture_performance_opt_in: bool = False
    autocapture_web_vitals_opt_in: bool = False
    autocapture_exceptions_opt_in: bool = False
    heatmaps_opt_in: bool = False
    capture_dead_clicks: bool = False
    ingestion_overflow: bool = False  # not a column: the isolation state, read from Redis


_FIELDS = tuple(field.name for field in fields(ProjectInfo) if field.name != "ingestion_overflow")
_cache: dict[str, tuple[float, ProjectInfo | None]] = {}
_asking: dict[str, threading.Event] = {}  # token -> set when the caller asking the database is done
_asking_lock = threading.Lock()
_UNCHECKED = b"\0unchecked"
_epoch: list[bytes | None] = [_UNCHECKED]


def project_for_token(token: str, *, check_epoch: bool = True) -> ProjectInfo | None:
    """The token's project. With check_epoch=False a cached answer is returned without asking
    Redis; the caller must then check that the epoch is still `cached_epoch()` (the capture
    endpoint does, atomically with its publish: pipeline/ingestion/publish.py)."""
    if check_epoch or _epoch[0] is _UNCHECKED:
        _check_epoch()
    hit = _cache.get(token)
    if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
        return hit[1]
    with _asking_lock:
        asked = _asking.get(token)
        first = asked is None
        if first:
            asked = _asking[token] = threading.Event()
    if hit is not None:
        if first:
            threading.Thread(target=_refresh, args=(token, asked), name="bklog-token-refresh", daemon=True).start()
        return hit[1]
    if first:
        return _ask(token, asked)
    asked.wait(LOOKUP_WAIT_SECONDS)
    hit = _cache.get(token)
    return hit[1] if hit is not None else _look_up(token)  # the other lookup failed or is slow


def _refresh(token: str, asked: threading.Event) -> None:
    """Renew an expired answer off the caller's path (a thread; a greenlet under gevent)."""
    try:
        _ask(token, asked)
    except Exception as exc:  # the old answer stays; the next caller past it tries again
        logger.warning("could not refresh a project's cached lookup", error=str(exc))


def _ask(token: str, asked: threading.Event) -> ProjectInfo | None:
    try:
        return _look_up(token)
    finally:
        with _asking_lock:
            del _asking[token]
        asked.set()


def _look_up(token: str) -> ProjectInfo | None:
    epoch = _epoch[0]
    row = _row_for(token)
    info = _with_state(ProjectInfo(*row)) if row else None
    if _epoch[0] == epoch:  # else the answer may predate the change that moved it: not kept
        _cache.pop(token, None)  # re-inserted: the newest, the last to be trimmed
        _cache[token] = (time.monotonic(), info)
        bounded.trim(_cache)
    return info


def _could_be_a_token(token: str) -> bool:
    """False for a string holding U+0000: no project's token, and PostgreSQL's text cannot even
    be compared with it (capture would answer 500 instead of 401)."""
    return "\x00" not in token


def _row_for(token: str) -> tuple | None:
    if not _could_be_a_token(token):
        return None
    return token_rows.row_for(token, _FIELDS)


def load_tokens(tokens: Iterable[str]) -> None:
    """Cache the projects of those of these tokens that have no fresh cached answer, in one
    query and one Redis round trip: an ingestion batch looks up all its tokens at once rather
    than a query per project. `project_for_token` then answers them from the cache."""
    _check_epoch()
    now = time.monotonic()
    missing = sorted(
        {token for token in tokens if token and now - _cache.get(token, (-CACHE_SECONDS, None))[0] >= CACHE_SECONDS}
    )
    if len(missing) < 2:  # project_for_token asks for one itself
        return
    epoch = _epoch[0]
    rows = Project.objects.filter(api_token__in=[token for token in missing if _could_be_a_token(token)]).values_list(
        "api_token", *_FIELDS
    )
    infos = {row[0]: ProjectInfo(*row[1:]) for row in rows}
    overflow = isolation.overflowing([info.id for info in infos.values()])
    _check_epoch()
    if _epoch[0] != epoch:  # a project changed meanwhile: the answers may predate it, not kept
        return
    looked_up = time.monotonic()
    for token in missing:
        info = infos.get(token)
        if info is not None and info.id in overflow:
            info = replace(info, ingestion_overflow=True)
        _cache.pop(token, None)
        _cache[token] = (looked_up, info)
    bounded.trim(_cache)


def project_by_id(project_id: int) -> ProjectInfo | None:
    row = Project.objects.filter(id=project_id).values_list(*_FIELDS).first()
    return _with_state(ProjectInfo(*row)) if row else None


def _with_state(info: ProjectInfo) -> ProjectInfo:
    return replace(info, ingestion_overflow=True) if isolation.in_overflow(info.id) else info


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
