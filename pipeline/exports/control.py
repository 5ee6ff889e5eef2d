"""What users do to exports (the API and the admin both call these): start, resume, pause, cancel.

Each change is one conditional UPDATE, so it holds against a run that commits at the same time;
a running export notices a pause or cancel at its next chunk boundary. Runs are queued by task
name (pipeline/celery_tasks.py): the API and the admin are no task modules.
"""

from django.db import transaction
from django.utils import timezone

from bklog_app.exports.models import ExportBase, ExportJob, ExportStatus, HistoricalExport
from pipeline.celery_tasks import send
from pipeline.exports import files
from pipeline.exports.lease import Lease, lock_name
from pipeline.queues import TaskName


class InvalidTransition(Exception):
    """The export's status does not allow this; the message says why."""

    def __init__(self, message: str, code: str = "invalid_status"):
        super().__init__(message)
        self.code = code


def _kind(job: ExportBase) -> str:
    return "historical" if isinstance(job, HistoricalExport) else "file"


def _what(job: ExportBase) -> str:
    return "historical export" if isinstance(job, HistoricalExport) else "export"


def enqueue(job: ExportBase) -> None:
    """Queue a run once the job's row is committed (the worker reads it from the database)."""
    task = TaskName.RUN_HISTORICAL_EXPORT if isinstance(job, HistoricalExport) else TaskName.RUN_FILE_EXPORT
    transaction.on_commit(lambda: send(task, job.pk))


def start(job: ExportBase) -> ExportBase:
    """Save a new export (status queued) and queue its first run."""
    job.status = ExportStatus.QUEUED
    job.save()
    enqueue(job)
    return job


def resume(job: ExportBase) -> ExportBase:
    """Make sure the export runs: a failed, paused or interrupted one carries on from its last
    committed chunk; a queued or running one gets a run queued that takes over only if the
    current run died (it waits for the export's lock). Finished exports cannot be resumed."""
    model = type(job)
    if job.status in (ExportStatus.FAILED, ExportStatus.PAUSED):
        model.objects.filter(pk=job.pk, status=job.status).update(
            status=ExportStatus.QUEUED, finished_at=None, heartbeat_at=timezone.now()
        )
        if isinstance(job, ExportJob):
            ExportJob.objects.filter(pk=job.pk).update(expires_at=None)
    elif job.status not in (ExportStatus.QUEUED, ExportStatus.RUNNING):
        raise InvalidTransition(f"This {_what(job)} is {job.status}; only failed, paused or interrupted ones resume.")
    job.refresh_from_db()
    if job.status in (ExportStatus.QUEUED, ExportStatus.RUNNING):
        enqueue(job)
    return job


def pause(job: HistoricalExport) -> HistoricalExport:
    """Stop a historical export after the batch in flight; `resume` carries on from there."""
    if not isinstance(job, HistoricalExport):
        raise InvalidTransition("Only historical exports can be paused; cancel a file export instead.")
    updated = HistoricalExport.objects.filter(pk=job.pk, status__in=(ExportStatus.QUEUED, ExportStatus.RUNNING)).update(
        status=ExportStatus.PAUSED
    )
    job.refresh_from_db()
    if not updated and job.status != ExportStatus.PAUSED:
        raise InvalidTransition(f"This historical export is {job.status}; only queued or running ones pause.")
    return job


def cancel(job: ExportBase) -> ExportBase:
    """Stop the export for good. A file export's file is deleted: at once if no run holds it,
    otherwise by that run at its next chunk boundary."""
    model = type(job)
    cancellable = (ExportStatus.QUEUED, ExportStatus.RUNNING, ExportStatus.PAUSED, ExportStatus.FAILED)
    updated = model.objects.filter(pk=job.pk, status__in=cancellable).update(
        status=ExportStatus.CANCELLED, finished_at=timezone.now()
    )
    job.refresh_from_db()
    if not updated:
        if job.status == ExportStatus.CANCELLED:
            return job
        raise InvalidTransition(f"This {_what(job)} is {job.status} already; there is nothing to cancel.")
    if isinstance(job, ExportJob):
        lease = Lease.take(lock_name(_kind(job), job.pk))
        if lease is not None:
            try:
                files.remove(job.file_name)
            finally:
                lease.release()
    return job
