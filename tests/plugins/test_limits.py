"""Limits on plugin code (pipeline/plugins/limits.py, docs/plugins.md#limits): recursion depth and
log volume per call, memory per worker pool process, and test runs that run on a worker under
their own time limit."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.urls import reverse

from bklog_app.plugins.models import PluginConfig, PluginLogEntry
from pipeline.plugins.chain import run_process_event_chain
from pipeline.plugins.limits import call_within_limits
from pipeline.plugins.logs import LogSink
from tests.conftest import ROOT
from tests.factories import wait_for_events
from tests.plugins.conftest import event, post_batch, wait_until
from tests.plugins.test_runtime import local, plugin_event

GREEDY = """
def process_event(event, meta):
    if event["event"] == "greedy":
        event["properties"]["blob"] = "x" * (4 << 30)  # 4 GB, far past PLUGIN_MEMORY_LIMIT_MB
    event["properties"]["seen"] = True
    return event
"""
RECURSIVE = """
def deeper(n):
    return deeper(n + 1)

def process_event(event, meta):
    return deeper(0)
"""
CHATTY = """
def process_event(event, meta):
    for n in range(5000):
        print("line", n)
    return event
"""
CHATTY_THEN_RECURSIVE = """
def deeper(n):
    return deeper(n + 1)

def process_event(event, meta):
    for n in range(100):
        print("line", n)
    return deeper(0)
"""


# --- in this process ---------------------------------------------------------------------


def test_runaway_recursion_ends_in_a_recursion_error_and_the_limit_is_restored():
    def deeper(n: int) -> int:
        return deeper(n + 1)

    before = sys.getrecursionlimit()
    with pytest.raises(RecursionError):
        call_within_limits(deeper, (0,), 5, "deeper")
    assert sys.getrecursionlimit() == before


def test_recursion_within_the_limit_is_fine(settings):
    settings.PLUGIN_RECURSION_LIMIT = 300

    def down(n: int) -> int:
        return 0 if n == 0 else 1 + down(n - 1)

    assert call_within_limits(down, (250,), 5, "down") == 250
    with pytest.raises(RecursionError):
        call_within_limits(down, (350,), 5, "down")


def test_log_lines_past_the_entry_limit_are_dropped_and_one_line_says_so(settings):
    settings.PLUGIN_LOG_MAX_ENTRIES_PER_CALL = 3
    sink = LogSink(None, 1, "i", persist=False)
    for n in range(10):
        sink.add("CONSOLE", "INFO", f"line {n}")
    sink.system("ERROR", "the call failed")
    assert [(line.source, line.type, line.message) for line in sink.lines] == [
        ("CONSOLE", "INFO", "line 0"),
        ("CONSOLE", "INFO", "line 1"),
        ("CONSOLE", "INFO", "line 2"),
        (
            "SYSTEM",
            "WARN",
            "this call logged more than 3 entries (PLUGIN_LOG_MAX_ENTRIES_PER_CALL): its further log lines are dropped",
        ),
        ("SYSTEM", "ERROR", "the call failed"),
    ]
    sink.flush()  # the next call starts afresh
    sink.lines.clear()
    sink.add("PLUGIN", "INFO", "next call")
    assert [line.message for line in sink.lines] == ["next call"]


def test_log_lines_past_the_character_limit_are_dropped(settings):
    settings.PLUGIN_LOG_MAX_CHARS_PER_CALL = 10
    sink = LogSink(None, 1, "i", persist=False)
    for text in ("12345", "67890", "x", "y"):
        sink.add("PLUGIN", "INFO", text)
    assert [line.message for line in sink.lines] == [
        "12345",
        "67890",
        "this call logged more than 10 characters (PLUGIN_LOG_MAX_CHARS_PER_CALL): its further log lines are dropped",
    ]


def test_a_capped_process_gets_a_memory_error_and_lives_on():
    """What a worker pool process does when it starts (pipeline/plugins/tasks.py), in a process
    of its own: this one must not be capped."""
    script = textwrap.dedent(
        """
        from pipeline.plugins.limits import limit_memory
        assert limit_memory(64) is not None
        try:
            blob = b"x" * (512 << 20)
        except MemoryError:
            print("MemoryError")
        small = b"x" * (16 << 20)
        print("alive", len(small))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2:] == ["MemoryError", f"alive {16 << 20}"]


def test_a_call_over_a_limit_fails_like_any_error_and_counts_towards_auto_disable(project, local_plugin, settings):
    settings.PLUGIN_AUTO_DISABLE_AFTER_FAILURES = 2
    settings.PLUGIN_LOG_MAX_ENTRIES_PER_CALL = 10
    plugin = local(local_plugin, CHATTY_THEN_RECURSIVE)
    config = PluginConfig.objects.create(project=project, plugin=plugin, enabled=True)
    for _ in range(2):
        assert run_process_event_chain(project.id, plugin_event(project.id)).failed == [f"P ({config.pk})"]
    config.refresh_from_db()
    assert config.enabled is False
    assert config.error["message"].startswith("disabled automatically after 2 failed calls in a row; the last: ")
    entries = config.log_entries
    assert entries.filter(source="CONSOLE").count() == 20  # 10 a call
    assert entries.filter(source="SYSTEM", type="WARN", message__contains="more than 10 entries").count() == 2
    assert entries.filter(type="ERROR", message__startswith="process_event failed: RecursionError").count() == 2


# --- test runs, on a worker --------------------------------------------------------------


def run(api_client, config, event_: dict | None = None):
    return api_client.post(
        f"/api/projects/{config.project_id}/plugin_configs/{config.pk}/test/",
        {"event": event_ or {"event": "greedy"}},
        format="json",
    )


def test_a_test_run_past_the_memory_limit_answers_a_memory_error(api_client, local_plugin_config, celery_worker):
    greedy = local_plugin_config(GREEDY)
    body = run(api_client, greedy).json()
    assert body["event"] is None
    assert body["error"]["name"] == "MemoryError"
    assert body["logs"][-1]["type"] == "ERROR"
    after = run(api_client, greedy, {"event": "modest"}).json()  # the worker lived on
    assert after["error"] is None and after["event"]["properties"] == {"seen": True}


def test_a_test_run_that_recurses_without_end_answers_a_recursion_error(api_client, local_plugin_config, celery_worker):
    body = run(api_client, local_plugin_config(RECURSIVE)).json()
    assert body["error"]["name"] == "RecursionError"


def test_a_test_run_keeps_its_log_within_the_limit(api_client, local_plugin_config, celery_worker):
    body = run(api_client, local_plugin_config(CHATTY)).json()
    assert body["error"] is None
    console = [line["message"] for line in body["logs"] if line["source"] == "CONSOLE"]
    assert console == [f"line {n}" for n in range(1000)]  # PLUGIN_LOG_MAX_ENTRIES_PER_CALL's default
    assert body["logs"][-1] == {
        **body["logs"][-1],
        "source": "SYSTEM",
        "type": "WARN",
        "message": "this call logged more than 1000 entries (PLUGIN_LOG_MAX_ENTRIES_PER_CALL): "
        "its further log lines are dropped",
    }


def test_a_test_run_no_worker_answers_in_time_is_a_503(api_client, local_plugin_config, settings, celery_worker):
    settings.PLUGIN_TEST_RUN_TIMEOUT_SECONDS = 1
    settings.PLUGIN_TEST_RUN_WAIT_SECONDS = 0.2
    sleeper = local_plugin_config("import time\ndef process_event(event, meta):\n    time.sleep(30)\n")
    response = run(api_client, sleeper)
    assert response.status_code == 503
    assert response.json() == {
        "type": "server_error",
        "code": "no_worker",
        "detail": "No worker answered the test run within 0.2 s (PLUGIN_TEST_RUN_WAIT_SECONDS): "
        "is a worker consuming the `default` queue?",
        "attr": None,
    }


def test_the_admins_test_run_page_says_when_no_worker_answered(
    admin_client, local_plugin_config, settings, celery_worker
):
    settings.PLUGIN_TEST_RUN_TIMEOUT_SECONDS = 1
    settings.PLUGIN_TEST_RUN_WAIT_SECONDS = 0.2
    sleeper = local_plugin_config("import time\ndef process_event(event, meta):\n    time.sleep(30)\n")
    url = reverse("admin:plugins_pluginconfig_test", args=[sleeper.pk])
    response = admin_client.post(url, {"event": '{"event": "x"}'})
    assert response.status_code == 200
    assert b"No worker answered the test run within 0.2 s (PLUGIN_TEST_RUN_WAIT_SECONDS)" in response.content

    settings.PLUGIN_TEST_RUN_WAIT_SECONDS = 60
    response = admin_client.post(url, {"event": '{"event": "x"}'})
    assert b"PluginTimeoutError: process_event ran past its time limit of 1 s" in response.content


def test_a_test_run_of_a_plugin_whose_files_are_gone_answers_the_load_error(api_client, local_plugin_config, settings):
    config = local_plugin_config("def process_event(event, meta):\n    return event\n")
    shutil.rmtree(Path(settings.PLUGINS_DIR) / config.plugin.path)
    response = run(api_client, config)
    assert response.status_code == 200
    body = response.json()
    assert body["event"] is None
    assert body["error"]["name"] == "PluginLoadError"
    assert body["logs"][0]["type"] == "ERROR"
    assert body["logs"][0]["message"].startswith("the plugin could not be loaded: PluginLoadError: ")


def test_a_test_run_while_redis_is_down_is_a_503_and_recovers(api_client, local_plugin_config, servers):
    config = local_plugin_config("def process_event(event, meta):\n    return event\n")
    redis = servers["redis"]
    redis.stop()
    try:
        response = run(api_client, config)
    finally:
        redis.start()
    assert response.status_code == 503
    assert response.json() == {
        "type": "server_error",
        "code": "server_error",
        "detail": "Redis is unavailable (OperationalError): the test run could not be queued or answered; retry later.",
        "attr": None,
    }


# --- ingestion ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_plugin_past_the_memory_limit_fails_alone_and_the_batch_is_stored(
    client, project, api_client, local_plugin, install, celery_worker
):
    _, config = install({"name": "Greedy", "source_type": "local", "path": local_plugin(GREEDY)})
    post_batch(client, project.api_token, [event("first"), event("greedy"), event("last")])
    stored = {e["event"]: e["properties"] for e in wait_for_events(project.id, 3, timeout=60)}
    assert stored["first"]["seen"] is True and stored["last"]["seen"] is True
    assert "blob" not in stored["greedy"]
    assert stored["greedy"]["$plugins_failed"] == [f"Greedy ({config['id']})"]

    error = wait_until(lambda: PluginConfig.objects.get(pk=config["id"]).error, message="the config's error")
    assert error["name"] == "MemoryError"
    assert error["message"].startswith("process_event: ")
    assert PluginLogEntry.objects.filter(
        plugin_config_id=config["id"], type="ERROR", message__startswith="process_event failed: MemoryError"
    ).exists()
    assert celery_worker.process.poll() is None
    post_batch(client, project.api_token, [event("afterwards")])
    assert wait_for_events(project.id, 1, event="afterwards")[0]["properties"]["seen"] is True
