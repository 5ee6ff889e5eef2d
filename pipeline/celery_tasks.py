"""The one decorator every Celery task is defined with, the retry policies it applies, and the
one way work outside a task module queues a task.

`task` builds on Celery's `shared_task`: a task binds to whichever app is current (the one
bklog_app.celery makes, in every process), so pipeline/ needs nothing of bklog_app but its models.
Its name and queue come from pipeline/queues.py, where each is declared once.

Work code does not import task modules (that is how import circles start): it returns what comes
next for its task to queue (exports' `Next`, plugins' `RetryLater`), or, where the follow-up is
decided deep inside the work (a plugin's `meta.jobs`, a full export buffer, an API call),
queues it by name with `send`.
"""

from collections.abc import Callable
from typing import Any

from celery import current_app, shared_task
from celery.worker.request import Request
from django.db import connections

from pipeline.errors import OUTAGE_EXCEPTIONS
from pipeline.queues import TASK_QUEUES, TaskName
from pipeline.unsettled import SETTLE_ERRORS, SETTLE_LOG

# The message is acknowledged once the task has finished, and goes back to the queue if its worker
# dies: the work must be safe to run twice (every task here claims its work, or is idempotent).
ACK_LATE: dict[str, Any] = {"acks_late": True, "reject_on_worker_lost": True}

# A dependency outage (docs/contracts.md: retried, never dropped) retries with backoff for as long
# as it lasts.
OUTAGE_RETRY: dict[str, Any] = {
    "autoretry_for": OUTAGE_EXCEPTIONS,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": None,
    **ACK_LATE,
}

# Periodic upkeep retries a few times; the next beat runs it again anyway.
UPKEEP_RETRY: dict[str, Any] = {
    "autoretry_for": OUTAGE_EXCEPTIONS,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 5,
}


class SettlingRequest(Request):
    """Celery's request, but a failure to acknowledge or requeue its message, of any kind, is
    recorded so the worker lets the message go (pipeline/unsettled.py)."""

    def acknowledge(self) -> None:
        if not self.acknowledged:
            self._on_ack(SETTLE_LOG, SETTLE_ERRORS)
            self.acknowledged = True

    def reject(self, requeue: bool = False) -> None:
        if not self.acknowledged:
            self._on_reject(SETTLE_LOG, SETTLE_ERRORS, requeue)
            self.acknowledged = True
            self.send_event("task-rejected", requeue=requeue)


# The seconds a task may run past its soft time limit (SoftTimeLimitExceeded) before it is killed.
HARD_LIMIT_GRACE_SECONDS = 60


def task(
    name: TaskName, *, retry: dict[str, Any] = OUTAGE_RETRY, time_limit: float | None = None, **options: Any
) -> Callable:
    """Define a task: `@task(TaskName.X)` above a thin function that calls into the work.

    `retry` is one of the policies above (or `{}`, for a task with retries of its own);
    `time_limit` is the soft limit in seconds, the hard one follows HARD_LIMIT_GRACE_SECONDS
    later. Other options (`base=`, celery-batches' `flush_every=`, ...) go to `shared_task`.
    """
    limits = {}
    if time_limit is not None:
        limits = {"soft_time_limit": time_limit, "time_limit": time_limit + HARD_LIMIT_GRACE_SECONDS}
    return shared_task(
        name=name.value, queue=TASK_QUEUES[name].value, Request=SettlingRequest, **retry, **limits, **options
    )


def send(name: TaskName, *args: Any, countdown: float | None = None) -> None:
    """Queue task `name` with these arguments, on its queue, without importing its module."""
    current_app.send_task(name.value, args=list(args), queue=TASK_QUEUES[name].value, countdown=countdown)


def settle_database_connections() -> None:
    """Django's rule between requests: close a connection past CONN_MAX_AGE or left unusable by
    an error (PostgreSQL restarted, say), keep the others; the next query opens a new one. Run
    between tasks, and by a task before it retries after an outage. A connection inside a
    transaction (an eager run's caller, in tests) is its owner's to close."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()
