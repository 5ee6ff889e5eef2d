"""Plugin jobs: `meta.jobs.<name>(payload).run_now() / run_in(n, unit) / run_at(datetime)`.

Every job is a PluginJob row. One due within PLUGIN_MAX_COUNTDOWN_SECONDS goes to Celery at once
(with a countdown); a later one waits in the database until the due-job poller (on `scheduled`)
hands it over shortly before it is due. The job task claims its row before running, so a
redelivered or duplicated message runs a job once.
"""

from datetime import datetime, timedelta

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from pipeline.errors import is_outage
from pipeline.plugins import registry
from pipeline.plugins.api import RetryError
from pipeline.plugins.deadletters import dead_letter
from pipeline.plugins.retries import JOB_DELAYS, next_delay

logger = structlog.get_logger(__name__)

POLL_BATCH = 1000


def schedule_job(plugin_config_id: int, name: str, payload: dict, run_at: datetime) -> int:
    from bklog_app.plugins.models import PluginJob

    now = timezone.now()
    job = PluginJob.objects.create(plugin_config_id=plugin_config_id, name=name, payload=payload, run_at=run_at)
    if (run_at - now).total_seconds() <= settings.PLUGIN_MAX_COUNTDOWN_SECONDS:
        _hand_over(job.pk, run_at, now)
    return job.pk


def _hand_over(job_id: int, run_at: datetime, now: datetime) -> bool:
    """pending -> queued, then a Celery message with the remaining countdown."""
    from bklog_app.plugins.models import PluginJob
    from pipeline.plugins import tasks

    if not PluginJob.objects.filter(pk=job_id, status=PluginJob.Status.PENDING).update(status=PluginJob.Status.QUEUED):
        return False
    countdown = max((run_at - now).total_seconds(), 0.0)
    transaction.on_commit(lambda: tasks.run_job.apply_async(args=[job_id], countdown=countdown))
    return True


def run_job(job_id: int) -> None:
    from bklog_app.plugins.models import PluginJob

    claimed = PluginJob.objects.filter(pk=job_id, status=PluginJob.Status.QUEUED).update(
        status=PluginJob.Status.RUNNING, started_at=timezone.now(), attempts=F("attempts") + 1
    )
    if not claimed:
        return  # ran already: a redelivered or duplicated message
    job = PluginJob.objects.get(pk=job_id)
    snapshot = registry.config_snapshot(job.plugin_config_id)
    instance = registry.instance_for(snapshot) if snapshot is not None else None
    jobs = instance.namespace.get("jobs") if instance is not None else None
    if instance is None or not isinstance(jobs, dict) or not callable(jobs.get(job.name)):
        _finish(job, PluginJob.Status.FAILED, "the plugin config is disabled, or its plugin has no such job")
        return
    try:
        instance.call(jobs[job.name], (job.payload, instance.meta), f"{snapshot.plugin_name} job {job.name}")
    except RetryError as exc:
        delay = next_delay(JOB_DELAYS, job.attempts)
        if delay is not None:
            instance.sink.system(
                "WARN",
                f"job {job.name!r} asked for a retry (attempt {job.attempts}); next attempt in {delay:g} s: {exc}",
            )
            instance.sink.flush()
            now = timezone.now()
            run_at = now + timedelta(seconds=delay)
            PluginJob.objects.filter(pk=job.pk).update(status=PluginJob.Status.PENDING, run_at=run_at, error=str(exc))
            if delay <= settings.PLUGIN_MAX_COUNTDOWN_SECONDS:
                _hand_over(job.pk, run_at, now)
            return
        _give_up(snapshot, instance, job, exc)
        return
    except Exception as exc:
        if is_outage(exc):
            PluginJob.objects.filter(pk=job.pk).update(status=PluginJob.Status.QUEUED)
            raise
        _give_up(snapshot, instance, job, exc)
        return
    registry.record_success(snapshot)
    _finish(job, PluginJob.Status.SUCCEEDED, "")


def _give_up(snapshot, instance, job, exc: BaseException) -> None:
    from bklog_app.plugins.models import PluginJob

    letter = dead_letter(
        snapshot.project_id,
        "job",
        exc,
        {"name": job.name, "payload": job.payload},
        {"plugin_config_id": snapshot.id, "job_id": job.pk, "attempts": job.attempts},
    )
    instance.sink.system("ERROR", f"job {job.name!r} failed after {job.attempts} attempt(s); dead letter {letter.pk}")
    registry.record_failure(snapshot, exc, method=f"job {job.name}", sink=instance.sink)
    _finish(job, PluginJob.Status.FAILED, f"{type(exc).__name__}: {exc}")


def _finish(job, status: str, error: str) -> None:
    from bklog_app.plugins.models import PluginJob

    PluginJob.objects.filter(pk=job.pk).update(status=status, error=error[:10_000], finished_at=timezone.now())


def hand_over_due_jobs() -> int:
    """The poller: jobs due before the next poll go to Celery; stuck ones are taken back."""
    from bklog_app.plugins.models import PluginJob

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
    return sum(1 for job_id, run_at in due if _hand_over(job_id, run_at, now))
