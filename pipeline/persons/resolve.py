"""Ingestion step 6: the person of each event, created, updated or merged as the event says.

The ingestion batch calls `resolve_batch` once per batch, with each project's events in order.
The persons of every (project, distinct id) in the batch are read at once (pipeline/persons/store.py,
through the validated cache of pipeline/persons/cache.py), each project's events are applied in
memory in order (pipeline/persons/state.py, a state per project: distinct ids are per project),
and everything they changed, in every project, is written in one transaction. If another worker
changed any of these persons meanwhile, the write is refused and the whole batch is recomputed
from a fresh read.

Failures: a database outage raises (the ingestion batch retries with backoff). An error while
applying one event (a bug) leaves the other events alone: that event's result is the exception,
and ingestion dead-letters it. If the batch's write itself fails for a reason other than an
outage or a conflict, each project is resolved again on its own, and a project whose write
fails again has its events resolved one at a time, so only the events whose own write fails
are dead-lettered and the other projects' events are not touched.
"""

from collections.abc import Callable, Sequence
from uuid import UUID

import structlog
from django.db import IntegrityError

from pipeline.errors import DependencyUnavailable, is_outage
from pipeline.persons import store
from pipeline.persons.cache import DistinctIdCache, get_cache
from pipeline.persons.merges import other_distinct_id
from pipeline.persons.state import BatchState, Changes, Outcome

logger = structlog.get_logger(__name__)

EMPTY_PERSON: tuple[UUID, dict] = (UUID(int=0), {})

# A batch recomputed this many times because of concurrent writers is retried later as a whole.
MAX_ATTEMPTS = 5

# warn(type, event_uuid, details) records an ingestion warning for the project.
Warn = Callable[[str, str | None, dict], None]
# warn(project_id, type, event_uuid, details): the same, for a batch of many projects.
ProjectWarn = Callable[[int, str, str | None, dict], None]

PersonResult = tuple[UUID, dict] | Exception


class PersonsContention(DependencyUnavailable):
    """The persons of this batch kept changing under it; retry the batch with backoff."""


def resolve_persons(project_id: int, events: Sequence[dict], warn: Warn) -> list[PersonResult]:
    """`resolve_batch` for the events of one project."""
    return resolve_batch({project_id: events}, lambda _project_id, *warning: warn(*warning))[project_id]


def resolve_batch(events: dict[int, Sequence[dict]], warn: ProjectWarn) -> dict[int, list[PersonResult]]:
    """Per project, one (person_id, person properties snapshot) per event, in order.

    Each event is the normalised event (`uuid`, `event`, `distinct_id`, `properties`,
    `timestamp_ms`). Events with `properties.$process_person_profile` false keep the empty
    person and touch no person. An event whose person handling failed (not an outage) gets the
    exception instead of a tuple; the caller dead-letters it.
    """
    results: dict[int, list[PersonResult]] = {
        project_id: [EMPTY_PERSON] * len(evs) for project_id, evs in events.items()
    }
    indexed = {
        project_id: [(index, event) for index, event in enumerate(evs) if processes_person_profile(event)]
        for project_id, evs in events.items()
    }
    to_resolve = {project_id: [event for _, event in items] for project_id, items in indexed.items() if items}
    if not to_resolve:
        return results
    try:
        outcomes = _resolve(to_resolve)
    except Exception as exc:
        if is_outage(exc):
            raise
        if len(to_resolve) == 1:
            [(project_id, project_events)] = to_resolve.items()
            outcomes = {project_id: _one_at_a_time(project_id, project_events, exc)}
        else:
            logger.warning(
                "writing a batch's persons failed; resolving its projects one at a time",
                projects=len(to_resolve),
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
            outcomes = {project_id: _resolve_project(project_id, evs) for project_id, evs in to_resolve.items()}
    for project_id, project_outcomes in outcomes.items():
        for (index, event), outcome in zip(indexed[project_id], project_outcomes, strict=True):
            if outcome.error is not None:
                results[project_id][index] = outcome.error
                continue
            for type_, details in outcome.warnings:
                warn(project_id, type_, event.get("uuid"), details)
            results[project_id][index] = (outcome.person_uuid, outcome.properties)
    return results


def processes_person_profile(event: dict) -> bool:
    return (event.get("properties") or {}).get("$process_person_profile") is not False


def _resolve(events: dict[int, Sequence[dict]]) -> dict[int, list[Outcome]]:
    """Read, apply in order, write; recompute from a fresh read when a concurrent writer won."""
    wanted = {project_id: _distinct_ids(project_events) for project_id, project_events in events.items()}
    cache = get_cache()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            with store.one_batch_at_a_time(wanted):
                # A retry reads everything from the database: the conflict may come from cached state.
                loaded = store.load(wanted, cache if attempt == 1 else None)
                states = {project_id: BatchState(loaded[project_id]) for project_id in events}
                outcomes = {
                    project_id: [states[project_id].apply(event) for event in project_events]
                    for project_id, project_events in events.items()
                }
                changed = {project_id: (state, state.changes()) for project_id, state in states.items()}
                changed = {project_id: pair for project_id, pair in changed.items() if not pair[1].empty}
                if not changed:
                    return outcomes
                store.write(changed, on_commit=lambda c=changed: _remember(cache, c))
        except store.Conflict as conflict:
            logger.info(
                "persons changed under this batch; recomputing it",
                project_ids=sorted(wanted)[:20],
                reason=str(conflict),
            )
            for project_id, distinct_ids in wanted.items():
                cache.discard(project_id, distinct_ids)
            if attempt == MAX_ATTEMPTS:
                if isinstance(conflict.cause, IntegrityError):
                    raise conflict.cause from conflict
                raise PersonsContention(
                    f"persons of project(s) {', '.join(map(str, sorted(wanted)[:20]))} changed under this batch "
                    f"{MAX_ATTEMPTS} times; the batch is retried later"
                ) from conflict
            continue
        return outcomes
    raise AssertionError("unreachable")


def _remember(cache: DistinctIdCache, written: dict[int, tuple[BatchState, Changes]]) -> None:
    for project_id, (state, _) in written.items():
        cache.put_many(project_id, state.committed())


def _resolve_project(project_id: int, events: Sequence[dict]) -> list[Outcome]:
    try:
        return _resolve({project_id: events})[project_id]
    except Exception as exc:
        if is_outage(exc):
            raise
        return _one_at_a_time(project_id, events, exc)


def _one_at_a_time(project_id: int, events: Sequence[dict], error: Exception) -> list[Outcome]:
    """The project's write failed with `error`: each event on its own, so only those whose own
    write fails get an error."""
    if len(events) == 1:
        return [Outcome(error=error)]
    logger.warning(
        "writing a batch's persons failed; resolving its events one at a time",
        project_id=project_id,
        events=len(events),
        error=f"{type(error).__name__}: {error}"[:300],
    )
    return [_resolve_alone(project_id, event) for event in events]


def _resolve_alone(project_id: int, event: dict) -> Outcome:
    try:
        return _resolve({project_id: [event]})[project_id][0]
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
