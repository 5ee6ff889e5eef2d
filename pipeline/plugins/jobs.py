"""Running plugin jobs (`meta.jobs.<name>(payload).run_now() / run_in(n, unit) / run_at(datetime)`).

Scheduling and the hand-over to Celery are pipeline/plugins/job_queue.py's. The job task claims
its row before running, so a redelivered or duplicated message runs a job once; a RetryError
puts the job back on the job queue, on the schedule of docs/contracts.md#plugin-api, then dead-letters it.
"""

from datetime import timedelta

import structlog
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from bklog_app.plugins.models import PluginJob
from pipeline.deadletters.record import dead_letter
from pipeline.errors import is_outage
from pipeline.plugins import registry
from pipeline.plugins.api import RetryError
from pipeline.plugins.job_queue import hand_over
from pipeline.plugins.retries import JOB_DELAYS, next_delay

logger = structlog.get_logger(__name__)


def run_job(job_id: int) -> None:
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
                hand_over(job.pk, run_at, now)
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
    PluginJob.objects.filter(pk=job.pk).update(status=status, error=error[:10_000], finished_at=timezone.now())
