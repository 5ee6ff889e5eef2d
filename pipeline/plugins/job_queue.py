"""Plugin jobs on their way to a worker: the PluginJob row, and its hand-over to Celery.

Every job is a PluginJob row. One due within PLUGIN_MAX_COUNTDOWN_SECONDS goes to Celery at once
(with a countdown); a later one waits in the database until the due-job poller (on `scheduled`)
hands it over shortly before it is due. `meta.jobs` schedules here, deep inside a plugin call,
so the job task is queued by name (pipeline/celery_tasks.py).
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from bklog_app.plugins.models import PluginJob
from pipeline.celery_tasks import send
from pipeline.queues import TaskName

POLL_BATCH = 1000


def schedule_job(plugin_config_id: int, name: str, payload: dict, run_at: datetime) -> int:
    now = timezone.now()
    job = PluginJob.objects.create(plugin_config_id=plugin_config_id, name=name, payload=payload, run_at=run_at)
    if (run_at - now).total_seconds() <= settings.PLUGIN_MAX_COUNTDOWN_SECONDS:
        hand_over(job.pk, run_at, now)
    return job.pk


def hand_over(job_id: int, run_at: datetime, now: datetime) -> bool:
    """pending -> queued, then a Celery message with the remaining countdown."""
    if not PluginJob.objects.filter(pk=job_id, status=PluginJob.Status.PENDING).update(status=PluginJob.Status.QUEUED):
        return False
    countdown = max((run_at - now).total_seconds(), 0.0)
    transaction.on_commit(lambda: send(TaskName.PLUGIN_RUN_JOB, job_id, countdown=countdown))
    return True


def hand_over_due_jobs() -> int:
    """The poller: jobs due before the next poll go to Celery; stuck ones are taken back."""
    now = timezone.now()
    horizon = now + timedelta(seconds=settings.PLUGIN_JOB_POLL_SECONDS * 2)
    # A job whose worker died mid-run, or whose message was lost, runs again.
    stale = now - timedelta(seconds=settings.PLUGIN_TIMEOUT_SECONDS * 2 + settings.CELERY_VISIBILITY_TIMEOUT)
    PluginJob.objects.filter(status=PluginJob.Status.RUNNING, started_at__lt=stale).update(
        status=PluginJob.Status.PENDING
    )
    PluginJob.objects.filter(status=PluginJob.Status.QUEUED, run_at__lt=stale).update(status=PluginJob.Status.PENDING)
    due = list(
        PluginJob.objects.filter(status=PluginJob.Status.PENDING, run_at__lte=horizon)
        .order_by("run_at")
        .values_list("pk", "run_at")[:POLL_BATCH]
    )
    return sum(1 for job_id, run_at in due if hand_over(job_id, run_at, now))
