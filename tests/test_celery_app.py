"""The Celery app's promises: declared queues only, JSON only, explicit names, worker roles."""

import gc
import re
import time

import pytest
from django.conf import settings

from bklog_app.celery import POOL_GC_YOUNGEST_THRESHOLD, TASK_MODULES, app, periodic_schedule
from pipeline.errors import OUTAGE_EXCEPTIONS
from pipeline.queues import ROLE_QUEUES, TASK_QUEUES, Queue, TaskName, queues_for_role

DECLARED = {queue.name for queue in app.conf.task_queues}


def bklog_tasks():
    app.loader.import_default_modules()
    for module in TASK_MODULES:
        __import__(module)
    return {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}


def test_the_five_queues_are_declared_once():
    assert DECLARED == {q.value for q in Queue} == {
        "default", "ingestion", "ingestion_overflow", "scheduled", "async_export",
    }  # fmt: skip
    assert len(app.conf.task_queues) == 5
    assert app.conf.task_create_missing_queues is False
    assert app.conf.task_default_queue == "default"


def test_json_only():
    assert app.conf.task_serializer == "json"
    assert app.conf.accept_content == ["json"]
    assert app.conf.result_serializer == "json"


def test_every_task_has_a_dotted_name_and_a_declared_queue():
    tasks = bklog_tasks()
    assert tasks, "no tasks registered"
    for name, task in tasks.items():
        assert name.startswith("bklog."), name
        assert task.queue in DECLARED, f"{name} routes to undeclared queue {task.queue!r}"


def test_every_task_name_and_queue_is_the_one_declared_in_pipeline_queues():
    tasks = bklog_tasks()
    assert set(tasks) == {name.value for name in TaskName}
    for name in TaskName:
        assert tasks[name.value].queue == TASK_QUEUES[name].value, name


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in TaskName
        if n.value.startswith(("bklog.plugins.", "bklog.exports.run_")) and n is not TaskName.PLUGIN_TEST_RUN
    ],
)
def test_work_retries_an_outage_for_as_long_as_it_lasts_and_acks_late(name):
    task = bklog_tasks()[name.value]
    assert task.autoretry_for == OUTAGE_EXCEPTIONS
    assert task.max_retries is None and task.retry_backoff == 2 and task.retry_backoff_max == 60
    assert task.acks_late and task.reject_on_worker_lost


def test_a_plugin_test_run_is_neither_retried_nor_redelivered():
    """Someone waits for its answer for PLUGIN_TEST_RUN_WAIT_SECONDS, and no longer."""
    task = bklog_tasks()[TaskName.PLUGIN_TEST_RUN.value]
    assert task.queue == "default"
    assert not getattr(task, "autoretry_for", ()) and not task.acks_late
    assert (task.soft_time_limit, task.time_limit) == (60, 120)


def test_export_runs_and_upkeep_are_bounded_in_time():
    tasks = bklog_tasks()
    for name in (TaskName.RUN_FILE_EXPORT, TaskName.RUN_HISTORICAL_EXPORT):
        assert tasks[name.value].soft_time_limit == settings.EXPORT_SLICE_SECONDS + 300
        assert tasks[name.value].time_limit == settings.EXPORT_SLICE_SECONDS + 360
    for name in (TaskName.CLEAN_UP_EXPIRED_EXPORTS, TaskName.REQUEUE_STALLED_EXPORTS):
        task = tasks[name.value]
        assert (task.soft_time_limit, task.time_limit) == (300, 360)
        assert task.autoretry_for == OUTAGE_EXCEPTIONS and task.max_retries == 5
        assert not task.acks_late  # the next beat runs it again


def test_every_periodic_task_is_registered_routed_and_expires():
    tasks = bklog_tasks()
    for entry_name, entry in periodic_schedule().items():
        assert entry["task"] in tasks, entry_name
        assert tasks[entry["task"]].queue in DECLARED
        assert entry.get("options", {}).get("expires"), f"{entry_name} has no expiry"


def test_a_task_routed_to_an_undeclared_queue_is_refused():
    with pytest.raises(Exception, match="nowhere"):
        app.send_task("bklog.nothing", queue="nowhere", retry=False)


def test_ingestion_acks_late_and_rejects_on_worker_lost():
    task = bklog_tasks()["bklog.ingestion.ingest_batch"]
    assert task.acks_late and task.reject_on_worker_lost
    assert task.queue == "ingestion"


@pytest.mark.parametrize(
    "role, queues",
    [
        ("all", {"ingestion", "ingestion_overflow", "default", "scheduled", "async_export"}),
        ("ingestion", {"ingestion"}),
        ("ingestion_overflow", {"ingestion_overflow"}),
        ("async", {"default", "async_export"}),
        ("scheduler", {"scheduled"}),
        ("default", {"default"}),
    ],
)
def test_roles_pick_queues(role, queues):
    assert {q.value for q in queues_for_role(role)} == queues


def test_unknown_role_says_which_exist():
    with pytest.raises(ValueError, match="ingestion"):
        queues_for_role("everything")
    assert set(ROLE_QUEUES) >= {"all", "ingestion", "async", "scheduler"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_real_worker_consumes_only_its_roles_queues(make_worker, how):
    worker = make_worker("async") if how == "flag" else make_worker(None, BKLOG_WORKER_ROLE="async")
    banner = worker.log.read_text()
    assert ".> default" in banner and ".> async_export" in banner
    assert ".> ingestion" not in banner and ".> scheduled" not in banner


@pytest.mark.django_db(transaction=True)
def test_pool_processes_leave_their_startup_objects_out_of_frequent_garbage_collections(make_worker):
    worker = make_worker("ingestion")
    deadline = time.monotonic() + 30
    while "pool process started" not in worker.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    frozen = re.search(r"pool process started.*frozen_objects=(\d+)", worker.log.read_text())
    assert frozen and int(frozen.group(1)) > 10_000, worker.tail()
    threshold = re.search(r"pool process started.*gc_threshold=\((\d+), (\d+), (\d+)\)", worker.log.read_text())
    assert threshold, worker.tail()
    youngest, middle, oldest = (int(n) for n in threshold.groups())
    assert youngest == POOL_GC_YOUNGEST_THRESHOLD != gc.get_threshold()[0], "a batch's live objects fit in the youngest"
    assert (middle, oldest) == gc.get_threshold()[1:], "the older generations keep Python's ratios"
