"""The Celery queues and every task's name and queue, declared once.

Every route, worker role, beat entry and task definition refers to this module. A task's name is
what its messages carry: renaming one strands the messages already queued under the old name.
"""

from datetime import timedelta
from enum import StrEnum


class Queue(StrEnum):
    INGESTION = "ingestion"  # captured batches: plugin chain, persons, ClickHouse insert
    # The same, for projects whose plugin chain is slow or failing (pipeline/ingestion/isolation.py),
    # consumed by workers of their own so that they cannot delay the others.
    INGESTION_OVERFLOW = "ingestion_overflow"
    DEFAULT = "default"  # on_event, export_events, plugin jobs, reload fan-out
    SCHEDULED = "scheduled"  # run_every_*, the due-job poller, clean-up, health pings
    ASYNC_EXPORT = "async_export"  # file exports, historical exports, event deletions


class TaskName(StrEnum):
    INGEST_BATCH = "bklog.ingestion.ingest_batch"
    SWEEP_JOURNAL = "bklog.ingestion.sweep_journal"
    PLUGIN_ON_EVENT = "bklog.plugins.on_event"
    PLUGIN_EXPORT_EVENTS = "bklog.plugins.export_events"
    PLUGIN_FLUSH_EXPORT_BUFFER = "bklog.plugins.flush_export_buffer"
    PLUGIN_RUN_JOB = "bklog.plugins.run_job"
    PLUGIN_RUN_SCHEDULED = "bklog.plugins.run_scheduled"
    PLUGIN_RUN_SCHEDULED_TASK = "bklog.plugins.run_scheduled_task"
    PLUGIN_POLL_DUE_WORK = "bklog.plugins.poll_due_work"
    PLUGIN_TEST_RUN = "bklog.plugins.test_run"
    RUN_FILE_EXPORT = "bklog.exports.run_file_export"
    RUN_HISTORICAL_EXPORT = "bklog.exports.run_historical_export"
    CLEAN_UP_EXPIRED_EXPORTS = "bklog.exports.clean_up_expired"
    REQUEUE_STALLED_EXPORTS = "bklog.exports.requeue_stalled"
    RUN_DELETIONS = "bklog.privacy.run_deletions"


TASK_QUEUES: dict[TaskName, Queue] = {
    TaskName.INGEST_BATCH: Queue.INGESTION,
    TaskName.SWEEP_JOURNAL: Queue.SCHEDULED,
    TaskName.PLUGIN_ON_EVENT: Queue.DEFAULT,
    TaskName.PLUGIN_EXPORT_EVENTS: Queue.DEFAULT,
    TaskName.PLUGIN_FLUSH_EXPORT_BUFFER: Queue.DEFAULT,
    TaskName.PLUGIN_RUN_JOB: Queue.DEFAULT,
    TaskName.PLUGIN_RUN_SCHEDULED: Queue.SCHEDULED,
    TaskName.PLUGIN_RUN_SCHEDULED_TASK: Queue.SCHEDULED,
    TaskName.PLUGIN_POLL_DUE_WORK: Queue.SCHEDULED,
    TaskName.PLUGIN_TEST_RUN: Queue.DEFAULT,
    TaskName.RUN_FILE_EXPORT: Queue.ASYNC_EXPORT,
    TaskName.RUN_HISTORICAL_EXPORT: Queue.ASYNC_EXPORT,
    TaskName.CLEAN_UP_EXPIRED_EXPORTS: Queue.SCHEDULED,
    TaskName.REQUEUE_STALLED_EXPORTS: Queue.SCHEDULED,
    # Long ClickHouse jobs like exports, away from the plugin work on `default`.
    TaskName.RUN_DELETIONS: Queue.ASYNC_EXPORT,
}


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
        "task": str(task),
        "schedule": timedelta(seconds=seconds),
        "options": {"queue": Queue.SCHEDULED.value, "expires": seconds},
    }
