"""Celery tasks of the plugin runtime: thin wrappers around the modules that do the work.

`default`: on_event, export_events (and their buffer flushes), plugin jobs, test runs.
`scheduled`: run_every_minute/hour/day fan-out and runs, the due-job poller.
A dependency outage raises out of the work and the task retries with backoff; plugin failures
are handled inside (retry schedules, dead letters), never by Celery's retry. A retry the work
asks for comes back as a `RetryLater`, and the task queues it.

Every pool process caps its memory when it starts (pipeline/plugins/limits.py): a plugin that
allocates past PLUGIN_MEMORY_LIMIT_MB gets a MemoryError, recorded as its error, and the process
lives on.
"""

import kombu.exceptions
from celery import signals
from django.conf import settings

from pipeline.celery_tasks import task
from pipeline.locks import held
from pipeline.plugins import export_buffer, job_queue, jobs, limits, registry, schedules, testrun
from pipeline.plugins.loader import PluginLoadError
from pipeline.plugins.on_event import run_on_event
from pipeline.plugins.retries import RetryLater
from pipeline.queues import TaskName
from pipeline.redis import REDIS_ERRORS

# A test run's calls each stop at PLUGIN_TEST_RUN_TIMEOUT_SECONDS; this bounds the task as a
# whole (load, setup, process_event, teardown), should a plugin swallow its timeout.
TEST_RUN_TASK_SECONDS = 60


def _again(task_, outcome: RetryLater | None) -> None:
    if outcome is not None:
        task_.apply_async(args=list(outcome.args), countdown=outcome.countdown)


@task(TaskName.PLUGIN_ON_EVENT)
def on_event(plugin_config_id: int, events: list[dict], attempt: int = 1) -> None:
    _again(on_event, run_on_event(plugin_config_id, events, attempt))


@task(TaskName.PLUGIN_EXPORT_EVENTS)
def export_events(plugin_config_id: int, batch_key: str, attempt: int = 1) -> None:
    _again(export_events, export_buffer.run_export_events(plugin_config_id, batch_key, attempt))


@task(TaskName.PLUGIN_FLUSH_EXPORT_BUFFER)
def flush_export_buffer(plugin_config_id: int) -> None:
    export_buffer.flush(plugin_config_id)


@task(TaskName.PLUGIN_RUN_JOB)
def run_job(job_id: int) -> None:
    jobs.run_job(job_id)


@task(TaskName.PLUGIN_RUN_SCHEDULED)
def run_scheduled(kind: str, period_seconds: int) -> None:
    """Beat's entry for run_every_<kind>: fans out once per period, whatever the number of beats."""
    period, config_ids = schedules.fan_out(kind, period_seconds)
    for config_id in config_ids:
        run_scheduled_task.apply_async(args=[config_id, kind, period_seconds, period])


@task(TaskName.PLUGIN_RUN_SCHEDULED_TASK)
def run_scheduled_task(plugin_config_id: int, kind: str, period_seconds: int, period: int) -> None:
    schedules.run_one(plugin_config_id, kind, period_seconds, period)


@task(TaskName.PLUGIN_POLL_DUE_WORK)
def poll_due_work() -> None:
    """Hand due jobs to Celery and flush export buffers whose time has come."""
    with held("plugins:poll-due-work") as acquired:
        if acquired:
            job_queue.hand_over_due_jobs()
            export_buffer.flush_due()


@task(TaskName.PLUGIN_TEST_RUN, retry={}, time_limit=TEST_RUN_TASK_SECONDS)
def test_run(message: dict) -> None:
    testrun.answer(testrun.TestRunRequest.from_message(message))


def test_run_on_a_worker(plugin_config, event: dict) -> dict:
    """Queue a test run of `plugin_config` on `event` and wait for its answer (in the web process).
    Raises testrun.NoWorkerAnswered after PLUGIN_TEST_RUN_WAIT_SECONDS (a message no worker took by
    then expires unrun), testrun.RedisUnavailable when the broker or Redis is down."""
    try:
        request = testrun.TestRunRequest.for_config(plugin_config, event)
    except PluginLoadError as exc:
        return testrun.not_loaded(plugin_config, exc)
    wait = settings.PLUGIN_TEST_RUN_WAIT_SECONDS
    try:
        test_run.apply_async(args=[request.as_message()], expires=wait, retry=False)
        return testrun.wait_for_answer(request, wait)
    except (*REDIS_ERRORS, kombu.exceptions.OperationalError) as exc:
        raise testrun.RedisUnavailable(
            f"Redis is unavailable ({type(exc).__name__}): the test run could not be queued or answered; retry later."
        ) from exc


@signals.worker_process_init.connect
def _limit_memory(**_) -> None:
    limits.limit_memory()


@signals.worker_process_shutdown.connect
def _teardown_on_shutdown(**_) -> None:
    registry.teardown_all()
