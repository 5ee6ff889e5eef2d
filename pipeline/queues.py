"""The four Celery queues, declared once. Every route and worker role refers to this module."""

from datetime import timedelta
from enum import StrEnum


class Queue(StrEnum):
    INGESTION = "ingestion"  # captured batches: plugin chain, persons, ClickHouse insert
    DEFAULT = "default"  # on_event, export_events, plugin jobs, reload fan-out
    SCHEDULED = "scheduled"  # run_every_*, the due-job poller, clean-up, health pings
    ASYNC_EXPORT = "async_export"  # file exports and historical exports


# A worker's role picks the queues it consumes. Single queue names are roles too, so that
# supervisord can run one program per queue.
ROLE_QUEUES: dict[str, tuple[Queue, ...]] = {
    "all": tuple(Queue),
    "ingestion": (Queue.INGESTION,),
    "async": (Queue.DEFAULT, Queue.ASYNC_EXPORT),
    "scheduler": (Queue.SCHEDULED,),
    **{queue.value: (queue,) for queue in Queue},
}


def queues_for_role(role: str) -> tuple[Queue, ...]:
    try:
        return ROLE_QUEUES[role]
    except KeyError:
        known = ", ".join(sorted(ROLE_QUEUES))
        raise ValueError(f"unknown worker role {role!r}; use one of: {known}") from None


def every_seconds_on_scheduled(task: str, seconds: int) -> dict:
    """A beat entry: `task` on the `scheduled` queue every `seconds`, expiring after one period
    so a backlog never runs stale copies."""
    return {
        "task": task,
        "schedule": timedelta(seconds=seconds),
        "options": {"queue": Queue.SCHEDULED.value, "expires": seconds},
    }
