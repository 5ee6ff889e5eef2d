"""Ingestion step 6: the person of each event, created, updated or merged as the event says.

The ingestion batch calls `resolve_persons` once per batch and project, with the events in
order. The persons of every distinct id in the batch are read at once (pipeline/persons/store.py,
through the validated cache of pipeline/persons/cache.py), the events are applied in memory in
order (pipeline/persons/state.py), and everything they changed is written in one transaction.
If another worker changed the same persons meanwhile, the write is refused and the batch is
recomputed from a fresh read.

Failures: a database outage raises (the ingestion batch retries with backoff). An error while
applying one event (a bug) leaves the other events alone: that event's result is the exception,
and ingestion dead-letters it. If the batch's write itself fails for a reason other than an
outage or a conflict, the events are resolved again one at a time, so only the events whose
own write fails are dead-lettered.
"""

from collections.abc import Callable, Sequence
from uuid import UUID

import structlog
from django.db import IntegrityError

from pipeline.errors import DependencyUnavailable, is_outage
from pipeline.persons import store
from pipeline.persons.cache import get_cache
from pipeline.persons.merges import other_distinct_id
from pipeline.persons.state import BatchState, Outcome

logger = structlog.get_logger(__name__)

EMPTY_PERSON: tuple[UUID, dict] = (UUID(int=0), {})

# A batch recomputed this many times because of concurrent writers is retried later as a whole.
MAX_ATTEMPTS = 5

# warn(type, event_uuid, details) records an ingestion warning for the project.
Warn = Callable[[str, str | None, dict], None]

PersonResult = tuple[UUID, dict] | Exception


class PersonsContention(DependencyUnavailable):
    """The persons of this batch kept changing under it; retry the batch with backoff."""


def resolve_persons(project_id: int, events: Sequence[dict], warn: Warn) -> list[PersonResult]:
    """One (person_id, person properties snapshot) per event, in order.

    Each event is the normalised event (`uuid`, `event`, `distinct_id`, `properties`,
    `timestamp_ms`). Events with `properties.$process_person_profile` false keep the empty
    person and touch no person. An event whose person handling failed (not an outage) gets the
    exception instead of a tuple; the caller dead-letters it.
    """
    results: list[PersonResult] = [EMPTY_PERSON] * len(events)
    indexed = [(index, event) for index, event in enumerate(events) if processes_person_profile(event)]
    if not indexed:
        return results
    to_resolve = [event for _, event in indexed]
    try:
        outcomes = _resolve(project_id, to_resolve)
    except Exception as exc:
        if is_outage(exc):
            raise
        if len(to_resolve) == 1:
            outcomes = [Outcome(error=exc)]
        else:
            logger.warning(
                "writing a batch's persons failed; resolving its events one at a time",
                project_id=project_id,
                events=len(to_resolve),
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
            outcomes = [_resolve_alone(project_id, event) for event in to_resolve]
    for (index, event), outcome in zip(indexed, outcomes, strict=True):
        if outcome.error is not None:
            results[index] = outcome.error
            continue
        for type_, details in outcome.warnings:
            warn(type_, event.get("uuid"), details)
        results[index] = (outcome.person_uuid, outcome.properties)
    return results


def processes_person_profile(event: dict) -> bool:
    return (event.get("properties") or {}).get("$process_person_profile") is not False


def _resolve(project_id: int, events: Sequence[dict]) -> list[Outcome]:
    """Read, apply in order, write; recompute from a fresh read when a concurrent writer won."""
    distinct_ids = _distinct_ids(events)
    cache = get_cache()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            with store.one_batch_at_a_time(project_id):
                # A retry reads everything from the database: the conflict may come from cached state.
                loaded = store.load(project_id, distinct_ids, cache if attempt == 1 else None)
                state = BatchState(loaded)
                outcomes = [state.apply(event) for event in events]
                changes = state.changes()
                if changes.empty:
                    return outcomes
                store.write(
                    project_id, state, changes, on_commit=lambda s=state: cache.put_many(project_id, s.committed())
                )
        except store.Conflict as conflict:
            logger.info("persons changed under this batch; recomputing it", project_id=project_id, reason=str(conflict))
            cache.discard(project_id, distinct_ids)
            if attempt == MAX_ATTEMPTS:
                if isinstance(conflict.cause, IntegrityError):
                    raise conflict.cause from conflict
                raise PersonsContention(
                    f"persons of project {project_id} changed under this batch {MAX_ATTEMPTS} times; "
                    "the batch is retried later"
                ) from conflict
            continue
        return outcomes
    raise AssertionError("unreachable")


def _resolve_alone(project_id: int, event: dict) -> Outcome:
    try:
        return _resolve(project_id, [event])[0]
    except Exception as exc:
        if is_outage(exc):
            raise
        return Outcome(error=exc)


def _distinct_ids(events: Sequence[dict]) -> list[str]:
    ids: dict[str, None] = {}
    for event in events:
        ids[event["distinct_id"]] = None
        other = other_distinct_id(event)
        if other is not None:
            ids[other] = None
    return list(ids)
