"""Periodic upkeep on the `scheduled` queue: expired export files, and exports nobody runs.

A stalled export's run is queued by task name (pipeline/celery_tasks.py): the upkeep decides it
row by row, under a claim on each row.
"""

from datetime import timedelta

import structlog
from django.conf import settings
from django.utils import timezone

from bklog_app.exports.models import ExportJob, ExportStatus, HistoricalExport
from pipeline.celery_tasks import send
from pipeline.exports import files
from pipeline.exports.lease import held_for, lock_name
from pipeline.queues import TaskName

logger = structlog.get_logger(__name__)


def expire_exports() -> int:
    """Delete the files of exports past their expiry; succeeded and failed ones become `expired`
    (their download answers 410). The number of exports expired."""
    now = timezone.now()
    due = ExportJob.objects.filter(
        expires_at__lte=now, status__in=(ExportStatus.SUCCEEDED, ExportStatus.FAILED, ExportStatus.CANCELLED)
    )
    expired = 0
    for job in due.only("pk", "file_name", "status").iterator():
        files.remove(job.file_name)
        if job.status == ExportStatus.CANCELLED:
            ExportJob.objects.filter(pk=job.pk).update(expires_at=None)
            continue
        expired += ExportJob.objects.filter(pk=job.pk, status=job.status).update(status=ExportStatus.EXPIRED)
    if expired:
        logger.info("expired export files deleted", exports=expired)
    return expired


def requeue_stalled() -> int:
    """Queue a run for every queued or running export with no sign of life for
    EXPORT_STALL_SECONDS whose lock nobody holds (its worker died, or its message was lost)."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.EXPORT_STALL_SECONDS)
    requeued = 0
    for model, kind, task in (
        (ExportJob, "file", TaskName.RUN_FILE_EXPORT),
        (HistoricalExport, "historical", TaskName.RUN_HISTORICAL_EXPORT),
    ):
        candidates = model.objects.filter(
            status__in=(ExportStatus.QUEUED, ExportStatus.RUNNING), heartbeat_at__lt=stale
        ).values_list("pk", "heartbeat_at")
        for export_id, heartbeat_at in candidates:
            if held_for(lock_name(kind, export_id)) is not None:
                continue
            # Claim the requeue (only one sweeper does it), and count it as a sign of life.
            if model.objects.filter(pk=export_id, heartbeat_at=heartbeat_at).update(heartbeat_at=now):
                send(task, export_id)
                requeued += 1
                logger.warning("stalled export queued again", kind=kind, export_id=export_id)
    return requeued
