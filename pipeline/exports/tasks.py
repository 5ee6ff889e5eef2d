"""Celery tasks of the exports: thin wrappers around the runs and the upkeep.

Runs go to `async_export`; the upkeep to `scheduled`. A run is bounded in time (it hands over to
a fresh task every EXPORT_SLICE_SECONDS, by returning `Next`), acknowledged late and rejected
back to the queue if its worker dies, and holds a Redis lock per export, so that a second copy
of its message waits for the lock instead of running beside it. A dependency outage retries with
backoff; the run then carries on from the last committed chunk.
"""

from django.conf import settings

from pipeline.celery_tasks import UPKEEP_RETRY, task
from pipeline.exports import cleanup, file_export, historical
from pipeline.exports.state import Next
from pipeline.locks import held
from pipeline.queues import TaskName

# A slice ends at a chunk boundary after EXPORT_SLICE_SECONDS; the limit only stops a run stuck
# inside one chunk (the run then continues from its last commit, see SoftTimeLimitExceeded).
RUN_TIME_LIMIT = settings.EXPORT_SLICE_SECONDS + 300
UPKEEP_TIME_LIMIT = 300


def _again(task_, export_id: int, outcome: Next | None) -> None:
    if outcome is not None:
        task_.apply_async(args=[export_id], countdown=outcome.countdown or None)


@task(TaskName.RUN_FILE_EXPORT, time_limit=RUN_TIME_LIMIT)
def run_file_export(export_id: int) -> None:
    _again(run_file_export, export_id, file_export.run_file_export(export_id))


@task(TaskName.RUN_HISTORICAL_EXPORT, time_limit=RUN_TIME_LIMIT)
def run_historical_export(export_id: int) -> None:
    _again(run_historical_export, export_id, historical.run_historical_export(export_id))


@task(TaskName.CLEAN_UP_EXPIRED_EXPORTS, retry=UPKEEP_RETRY, time_limit=UPKEEP_TIME_LIMIT)
def clean_up_expired() -> None:
    with held("exports:clean-up") as acquired:
        if acquired:
            cleanup.expire_exports()


@task(TaskName.REQUEUE_STALLED_EXPORTS, retry=UPKEEP_RETRY, time_limit=UPKEEP_TIME_LIMIT)
def requeue_stalled() -> None:
    with held("exports:requeue-stalled") as acquired:
        if acquired:
            cleanup.requeue_stalled()
