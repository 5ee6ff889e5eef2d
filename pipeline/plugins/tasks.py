"""Celery tasks of the plugin runtime: thin wrappers around the modules that do the work.

`default`: on_event, export_events (and their buffer flushes), plugin jobs.
`scheduled`: run_every_minute/hour/day fan-out and runs, the due-job poller.
A dependency outage raises out of the work and the task retries with backoff; plugin failures
are handled inside (retry schedules, dead letters), never by Celery's retry.
"""

from celery import signals

from bklog_app.celery import app
from pipeline.errors import OUTAGE_EXCEPTIONS
from pipeline.locks import held
from pipeline.queues import Queue

OUTAGE_RETRY = {
    "autoretry_for": OUTAGE_EXCEPTIONS,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": None,
    "acks_late": True,
    "reject_on_worker_lost": True,
}


@app.task(name="bklog.plugins.on_event", queue=Queue.DEFAULT.value, **OUTAGE_RETRY)
def on_event(plugin_config_id: int, events: list[dict], attempt: int = 1) -> None:
    from pipeline.plugins.on_event import run_on_event

    run_on_event(plugin_config_id, events, attempt)


@app.task(name="bklog.plugins.export_events", queue=Queue.DEFAULT.value, **OUTAGE_RETRY)
def export_events(plugin_config_id: int, batch_key: str, attempt: int = 1) -> None:
    from pipeline.plugins.exports import run_export

    run_export(plugin_config_id, batch_key, attempt)


@app.task(name="bklog.plugins.flush_export_buffer", queue=Queue.DEFAULT.value, **OUTAGE_RETRY)
def flush_export_buffer(plugin_config_id: int) -> None:
    from pipeline.plugins.exports import flush

    flush(plugin_config_id)


@app.task(name="bklog.plugins.run_job", queue=Queue.DEFAULT.value, **OUTAGE_RETRY)
def run_job(job_id: int) -> None:
    from pipeline.plugins.jobs import run_job as run

    run(job_id)


@app.task(name="bklog.plugins.run_scheduled", queue=Queue.SCHEDULED.value, **OUTAGE_RETRY)
def run_scheduled(kind: str, period_seconds: int) -> None:
    """Beat's entry for run_every_<kind>: fans out once per period, whatever the number of beats."""
    from pipeline.plugins.schedules import fan_out

    fan_out(kind, period_seconds)


@app.task(name="bklog.plugins.run_scheduled_task", queue=Queue.SCHEDULED.value, **OUTAGE_RETRY)
def run_scheduled_task(plugin_config_id: int, kind: str, period_seconds: int, period: int) -> None:
    from pipeline.plugins.schedules import run_one

    run_one(plugin_config_id, kind, period_seconds, period)


@app.task(name="bklog.plugins.poll_due_work", queue=Queue.SCHEDULED.value, **OUTAGE_RETRY)
def poll_due_work() -> None:
    """Hand due jobs to Celery and flush export buffers whose time has come."""
    from pipeline.plugins.exports import flush_due
    from pipeline.plugins.jobs import hand_over_due_jobs

    with held("plugins:poll-due-work") as acquired:
        if acquired:
            hand_over_due_jobs()
            flush_due()


@signals.worker_process_shutdown.connect
def _teardown_on_shutdown(**_) -> None:
    from pipeline.plugins.registry import teardown_all

    teardown_all()
