"""Deleting stored events on a worker: count, mutate, follow the mutation to its end.

`run_deletions(project_id)` takes one project's unfinished deletion requests a step further:
- `counting`: the rows each matches are counted (`dry_run_count`); a dry run then waits for a
  confirm (`counted`), the others are `queued`;
- `queued` person requests go into one mutation together (`distinct_id IN (...) OR person_id IN
  (...)`), each filter request into one of its own; `rows_affected` is what the request matched
  just before, and the request is `running`;
- `running`: `system.mutations` gives `parts_to_do` (progress) and `is_done` (`succeeded`).
It returns the seconds after which it should run again while a mutation is under way, else None:
its task queues the next run (work does not enqueue its own follow-up).

A mutation rewrites the parts that existed when it was issued; rows inserted later are not in
them. Suppression (pipeline/privacy/suppression.py) is what keeps a deleted person's later
events out.
"""

import uuid
from datetime import datetime

import structlog
from django.db import transaction
from django.utils import timezone

from bklog_app.privacy.models import DeletionRequest, DeletionStatus
from pipeline.errors import is_outage
from pipeline.ingestion.timestamps import parse_iso, to_ms
from pipeline.storage import privacy as store

logger = structlog.get_logger(__name__)

POLL_SECONDS = 1.0


def run_deletions(project_id: int) -> float | None:
    """An outage raises (the task retries); any other error fails the requests it concerns, with
    the reason, and the others carry on."""
    requests = DeletionRequest.objects.filter(project_id=project_id)
    for request in requests.filter(status=DeletionStatus.COUNTING).order_by("id"):
        _guarded([request], _count, request)
    queued = list(requests.filter(status=DeletionStatus.QUEUED).order_by("id"))
    persons = [r for r in queued if r.kind == DeletionRequest.Kind.PERSON]
    if persons:
        _guarded(persons, _mutate_persons, project_id, persons)
    for request in queued:
        if request.kind == DeletionRequest.Kind.FILTER:
            _guarded([request], _mutate_filter, request)
    for request in requests.filter(status=DeletionStatus.RUNNING).order_by("id"):
        _guarded([request], _follow, request)
    return POLL_SECONDS if requests.filter(status=DeletionStatus.RUNNING).exists() else None


def _guarded(requests: list[DeletionRequest], step, *args) -> None:
    try:
        step(*args)
    except Exception as exc:
        if is_outage(exc):
            raise
        logger.warning("deletion failed", requests=[r.pk for r in requests], error=str(exc)[:300])
        DeletionRequest.objects.filter(pk__in=[r.pk for r in requests]).update(
            status=DeletionStatus.FAILED,
            error=f"{type(exc).__name__}: {str(exc)[:2000]}; make a new request once the cause is fixed.",
            finished_at=timezone.now(),
        )


def confirm(request: DeletionRequest) -> bool:
    """A counted dry run goes ahead; False if it was not waiting for a confirm."""
    return bool(
        DeletionRequest.objects.filter(pk=request.pk, status=DeletionStatus.COUNTED).update(
            status=DeletionStatus.QUEUED
        )
    )


def _count(request: DeletionRequest) -> None:
    request.dry_run_count = _matching(request)
    request.status = DeletionStatus.COUNTED if request.dry_run else DeletionStatus.QUEUED
    request.save(update_fields=["dry_run_count", "status"])


def _matching(request: DeletionRequest) -> int:
    if request.kind == DeletionRequest.Kind.PERSON:
        return store.count_person_events(_person_params(request))
    return store.count_filter_events(filter_params(request))


def _person_params(request: DeletionRequest) -> dict:
    spec = request.filter
    return store.person_params(request.project_id, spec.get("distinct_ids") or [], spec.get("person_ids") or [])


def filter_params(request: DeletionRequest) -> dict:
    spec = request.filter
    return store.filter_params(
        request.project_id,
        spec.get("event") or "",
        spec.get("distinct_id") or "",
        _ms(spec.get("after")),
        _ms(spec.get("before")),
    )


def _ms(value: str | None) -> int | None:
    parsed: datetime | None = parse_iso(value) if value else None
    return None if parsed is None else to_ms(parsed)


def _mutate_persons(project_id: int, requests: list[DeletionRequest]) -> None:
    for request in requests:
        request.rows_affected = store.count_person_events(_person_params(request))
    distinct_ids = sorted({i for r in requests for i in r.filter.get("distinct_ids") or []})
    person_ids = sorted({i for r in requests for i in r.filter.get("person_ids") or []})
    marker = _marker()
    store.delete_person_events(store.person_params(project_id, distinct_ids, person_ids), marker)
    logger.info("deleting persons' events", project_id=project_id, requests=[r.pk for r in requests], marker=marker)
    _started(requests, marker)


def _mutate_filter(request: DeletionRequest) -> None:
    params = filter_params(request)
    request.rows_affected = store.count_filter_events(params)
    marker = _marker()
    store.delete_filter_events(params, marker)
    logger.info("deleting events by filter", project_id=request.project_id, request=request.pk, marker=marker)
    _started([request], marker)


def _marker() -> str:
    return f"bklog-deletion:{uuid.uuid4().hex}:"


def _started(requests: list[DeletionRequest], marker: str) -> None:
    now = timezone.now()
    with transaction.atomic():
        for request in requests:
            request.status = DeletionStatus.RUNNING
            request.mutation_marker = marker
            request.started_at = now
            request.save(update_fields=["rows_affected", "status", "mutation_marker", "started_at"])


def _follow(request: DeletionRequest) -> None:
    state = store.mutation_state(request.mutation_marker)
    if not state.found:
        request.status = DeletionStatus.FAILED
        request.error = (
            "Its mutation is no longer in system.mutations (killed, or the table was recreated); "
            "make a new request to delete what is left."
        )
        request.finished_at = timezone.now()
        request.save(update_fields=["status", "error", "finished_at"])
        return
    if request.parts_total is None or state.parts_to_do > request.parts_total:
        request.parts_total = state.parts_to_do
    if state.is_done:
        request.status, request.progress, request.finished_at = DeletionStatus.SUCCEEDED, 100, timezone.now()
        logger.info("deletion done", request=request.pk, rows=request.rows_affected)
    elif request.parts_total:
        request.progress = min(99, (request.parts_total - state.parts_to_do) * 100 // request.parts_total)
    request.save(update_fields=["parts_total", "status", "progress", "finished_at"])
