"""Capture's one way into the pipeline: a decoded request is accepted (enqueued) or refused.

Every capture view (bklog_app/capture/) decodes its own wire format and hands the result to
`accept`, which finds the token's project, applies the project's rate limit and enqueues the
events; it returns once they are in Redis, or raises a `CaptureRefused` that the view answers
with its HTTP error.

The token's project comes from this process's cache (projects.py). Whether any project changed
since (the epoch) is checked in the same Redis round trip as the publish when the broker and
the cache share a Redis, else read before it: a request costs one round trip to the broker, plus
one for the rate-limit counter when its project has a limit.

A project in overflow (pipeline/ingestion/isolation.py) has its events put on the
`ingestion_overflow` queue; its state comes with the cached project, at no cost per request.
"""

from datetime import datetime

from django.conf import settings
from kombu.exceptions import OperationalError as BrokerError

from pipeline.ingestion import projects, publish
from pipeline.ingestion.enqueue import enqueue
from pipeline.ingestion.message import INGEST_QUEUE, OVERFLOW_QUEUE, CapturedRequest
from pipeline.ingestion.projects import ProjectInfo
from pipeline.metrics import EVENTS_RECEIVED
from pipeline.redis import REDIS_ERRORS, get_redis

RATE_LIMIT_KEY = "bklog:ratelimit:{project_id}:{minute}"  # events counted per project per minute
_RATE_LIMIT_KEY_SECONDS = 120


class CaptureRefused(Exception):
    """The request was not accepted: nothing of it was enqueued."""


class UnknownToken(CaptureRefused):
    """No project has this token."""

    def __init__(self) -> None:
        super().__init__("no project has this token")


class RateLimited(CaptureRefused):
    """The project is over its events-per-minute limit."""

    def __init__(self, per_minute: int) -> None:
        super().__init__(f"over the project's rate limit of {per_minute} events per minute")
        self.per_minute = per_minute


class Unavailable(CaptureRefused):
    """A dependency capture needs did not answer; the message says which. Safe to retry."""

    advice = "nothing was stored. Retry later."


class ProjectsUnavailable(Unavailable):
    """The project's lookup failed (the database, or Redis for the cache's epoch)."""


class QueueUnavailable(Unavailable):
    """Redis did not take the events (the queue) or did not count them (the rate limit)."""


class NotConfirmed(QueueUnavailable):
    """The events are queued on the Redis master, but no replica confirmed them in time
    (REDIS_WAIT_REPLICAS): a failover could still lose them, so they are not accepted."""

    advice = "send them again: if the queued copy survives too, the events are stored once."


def accept(token: str, events: list[dict], *, ip: str | None, sent_at: str | None, now: datetime) -> None:
    """Enqueue the request's events for `token`'s project; returns once they are in Redis.

    `now` is when the request was received (an aware datetime). An empty `events` is accepted
    once the token is known: nothing to store, and nothing wrong. Raises UnknownToken,
    RateLimited, ProjectsUnavailable or QueueUnavailable."""
    guarded = publish.can_guard_with(settings.REDIS_URL)
    project = _project(token, check_epoch=not guarded)
    if project is None and guarded:
        project = _project(token, check_epoch=True)  # a cached "unknown token" may be stale
    if project is None:
        raise UnknownToken()
    if not events:
        return
    if project.rate_limit_per_minute:
        _check_rate_limit(project.id, project.rate_limit_per_minute, len(events), now)
    request = CapturedRequest(
        token=token,
        project_id=project.id,
        events=events,
        ip=ip,
        now=now.isoformat(timespec="milliseconds"),
        sent_at=sent_at,
    )
    try:
        try:
            enqueue(
                request,
                guard=(projects.EPOCH_KEY, projects.cached_epoch()) if guarded else None,
                queue=_queue_for(project),
            )
        except publish.GuardChanged as changed:
            # A project changed since this process cached the token's: nothing was published.
            projects.note_epoch(changed.current)
            project = _project(token, check_epoch=True)
            if project is None:
                raise UnknownToken() from None
            request["project_id"] = project.id
            enqueue(request, queue=_queue_for(project))
    except publish.NotReplicated as exc:
        raise NotConfirmed(f"The event queue (Redis) did not confirm the events ({exc})") from exc
    except (BrokerError, *REDIS_ERRORS, OSError) as exc:
        raise QueueUnavailable(f"The event queue (Redis) did not accept the events ({exc})") from exc
    EVENTS_RECEIVED.inc(len(events))


def _queue_for(project: ProjectInfo) -> str:
    return OVERFLOW_QUEUE if project.ingestion_overflow else INGEST_QUEUE


def _project(token: str, *, check_epoch: bool) -> ProjectInfo | None:
    try:
        return projects.project_for_token(token, check_epoch=check_epoch)
    except Exception as exc:
        raise ProjectsUnavailable(f"The project database or Redis is unavailable ({type(exc).__name__})") from exc


def _check_rate_limit(project_id: int, per_minute: int, events: int, now: datetime) -> None:
    key = RATE_LIMIT_KEY.format(project_id=project_id, minute=int(now.timestamp() // 60))
    try:
        pipe = get_redis().pipeline(transaction=False)
        pipe.incrby(key, events)
        pipe.expire(key, _RATE_LIMIT_KEY_SECONDS)
        count, _ = pipe.execute()
    except REDIS_ERRORS as exc:
        raise QueueUnavailable(f"The event queue (Redis) is unavailable ({exc})") from exc
    if count > per_minute:
        raise RateLimited(per_minute)
