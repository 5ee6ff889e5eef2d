"""The pure pieces of the fault suite: the comparison, the 5xx windows, the plugin selection."""

import os
import uuid

from chaos import report
from chaos.selection import raises_on, times_out_on
from chaos.stack import RECOVERY_SETTINGS, ChaosStack, suite_settings
from chaos.verify import compare, unexpected_server_errors


def test_compare_counts_stored_dead_lettered_lost_and_duplicated():
    result = compare(
        accepted=["a", "b", "c", "d", "e"],
        stored_counts={"a": 1, "b": 2, "x": 3},
        dead_letters={"c": "plugins: boom", "d": "  "},
    )
    assert (result.accepted, result.stored, result.dead_lettered) == (5, 2, 1)
    assert result.lost == ["d", "e"]  # a dead letter without a reason does not count
    assert result.duplicated == ["b", "x"]


def test_only_503_inside_an_outage_window_is_expected():
    outcomes = [(10.0, 10.1, 503), (20.0, 20.1, 503), (10.5, 10.6, 500), (30.0, 30.1, 200), (31.0, 31.1, 502)]
    bad = unexpected_server_errors(outcomes, [(9.0, 12.0)], grace=1.0)
    assert bad == [(20.1, 503), (10.6, 500), (31.1, 502)]


def test_plugin_selection_is_about_one_percent_and_disjoint():
    uuids = [str(uuid.UUID(int=n)) for n in range(10_000)]
    raised = [u for u in uuids if raises_on(u)]
    timed_out = [u for u in uuids if times_out_on(u)]
    assert len(raised) == 100 and len(timed_out) == 20
    assert not set(raised) & set(timed_out)
    assert not raises_on("not-a-uuid")


def test_failures_name_every_broken_promise():
    result = {
        "accepted": 10,
        "lost": 1,
        "duplicated": 0,
        "unexpected_5xx": 0,
        "stuck": [],
        "faults": {"redis": 3.0, "clickhouse": None},
        "examples": {"lost": ["u1"], "duplicated": []},
    }
    problems = report.failures(result)
    assert any("lost" in p for p in problems) and any("clickhouse" in p for p in problems)


def test_a_killed_workers_held_events_not_all_stored_is_a_failure():
    result = {
        "accepted": 10,
        "lost": 0,
        "duplicated": 0,
        "unexpected_5xx": 0,
        "stuck": [],
        "faults": {"sigkill worker ingestion": 3.0},
        "worker_kills": {"sigkill worker ingestion": {"held_events": 40, "recovery_s": None}},
    }
    assert report.failures(result) == ["sigkill worker ingestion: the 40 events the worker held were not all stored"]
    result["worker_kills"]["sigkill worker ingestion"]["recovery_s"] = 31.5
    assert report.failures(result) == []


def test_worker_kill_recovery_is_the_slowest_kill_that_held_events():
    kills = {
        "ingestion": {"held_events": 40, "recovery_s": 31.5},
        "again": {"held_events": 3, "recovery_s": 12.0},
        "idle": {"held_events": 0, "recovery_s": None},
    }
    assert report.worker_kill_recovery(kills) == 31.5
    assert report.worker_kill_recovery({"idle": kills["idle"]}) is None
    assert report.worker_kill_recovery({**kills, "never": {"held_events": 1, "recovery_s": None}}) is None


def test_the_suite_runs_the_default_recovery_settings_and_says_why_it_changes_any():
    changed = suite_settings()
    assert all(setting["reason"] for setting in changed.values())
    assert "CELERY_VISIBILITY_TIMEOUT" in os.environ  # tests/conftest.py shortens it for the tests...
    assert not set(RECOVERY_SETTINGS) & set(ChaosStack().env())  # ...the suite's stack does not
    assert not set(RECOVERY_SETTINGS) & set(changed)


def test_the_event_uuids_of_a_message_are_read_as_capture_and_kombu_write_it():
    import json

    from chaos.verify import _event_uuids
    from pipeline.ingestion.message import INGEST_QUEUE, INGEST_TASK_NAME, to_wire
    from pipeline.ingestion.publish import task_message

    part = {
        "token": "t",
        "project_id": 1,
        "events": [{"uuid": "u1"}, {"uuid": "u2"}],
        "ip": None,
        "now": "",
        "sent_at": None,
    }
    raw = json.loads(task_message(INGEST_TASK_NAME, INGEST_QUEUE, to_wire([part]), "{}"))
    assert _event_uuids(raw) == {"u1", "u2"}
    assert _event_uuids({"body": "not base64 json", "headers": {}, "properties": {}}) == set()
