"""Celery tasks of the exports: thin wrappers around the runs and the upkeep.

Runs go to `async_export`; the upkeep to `scheduled`. A run is bounded in time (it hands over to
a fresh task every EXPORT_SLICE_SECONDS), acknowledged late and rejected back to the queue if its
worker dies, and holds a Redis lock per export, so that a second copy of its message waits for
the lock instead of running beside it. A dependency outage retries with backoff; the run then
carries on from the last committed chunk.
"""

from django.conf import settings

from bklog_app.celery import app
from pipeline.errors import OUTAGE_EXCEPTIONS
from pipeline.exports.state import Next
from pipeline.locks import held
from pipeline.queues import Queue

RUN_OPTIONS = {
    "autoretry_for": OUTAGE_EXCEPTIONS,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": None,
    "acks_late": True,
    "reject_on_worker_lost": True,
    # A slice ends at a chunk boundary after EXPORT_SLICE_SECONDS; the limits only stop a run stuck
    # inside one chunk (the run then continues from its last commit, see SoftTimeLimitExceeded).
    "soft_time_limit": settings.EXPORT_SLICE_SECONDS + 300,
    "time_limit": settings.EXPORT_SLICE_SECONDS + 360,
}
UPKEEP_OPTIONS = {
    "autoretry_for": OUTAGE_EXCEPTIONS,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "max_retries": 5,
    "soft_time_limit": 300,
    "time_limit": 360,
}


def _again(task, export_id: int, outcome: Next | None) -> None:
    if outcome is not None:
        task.apply_async(args=[export_id], countdown=outcome.countdown or None)


@app.task(name="bklog.exports.run_file_export", queue=Queue.ASYNC_EXPORT.value, **RUN_OPTIONS)
def run_file_export(export_id: int) -> None:
    from pipeline.exports.file_export import run_file_export as run

    _again(run_file_export, export_id, run(export_id))


@app.task(name="bklog.exports.run_historical_export", queue=Queue.ASYNC_EXPORT.value, **RUN_OPTIONS)
def run_historical_export(export_id: int) -> None:
    from pipeline.exports.historical import run_historical_export as run

    _again(run_historical_export, export_id, run(export_id))


@app.task(name="bklog.exports.clean_up_expired", queue=Queue.SCHEDULED.value, **UPKEEP_OPTIONS)
def clean_up_expired() -> None:
    from pipeline.exports.cleanup import expire_exports

    with held("exports:clean-up") as acquired:
        if acquired:
            expire_exports()


@app.task(name="bklog.exports.requeue_stalled", queue=Queue.SCHEDULED.value, **UPKEEP_OPTIONS)
def requeue_stalled() -> None:
    from pipeline.exports.cleanup import requeue_stalled as requeue

    with held("exports:requeue-stalled") as acquired:
        if acquired:
            requeue()
