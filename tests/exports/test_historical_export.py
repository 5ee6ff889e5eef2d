"""Historical exports, run in this process through the plugin runtime: order, the flag, batches,
the export_events retry rules, pause and resume, a config that goes away."""

from datetime import timedelta

import pytest

from bklog_app.exports.models import ExportStatus, HistoricalExport
from bklog_app.plugins.models import PluginConfig, PluginLogEntry
from pipeline.exports import control
from pipeline.exports.historical import HISTORICAL_FLAG, run_historical_export
from pipeline.exports.state import Next
from tests.exports.conftest import BASE_MS, START, cached_list, keyset_order, make_export, store_events

RECORDING_PLUGIN = """
from pipeline.plugins.api import RetryError

def export_events(events, meta):
    calls = meta.cache.incr("calls")
    if calls <= int(meta.config.get("fail_first") or 0):
        raise RetryError(f"call {calls}: not yet")
    meta.cache.lpush("batches", [[e["uuid"] for e in events]])
    meta.cache.lpush("events", events)
"""


@pytest.fixture(autouse=True)
def small_batches(settings):
    settings.EXPORT_HISTORICAL_BATCH_ROWS = 4
    settings.PLUGIN_RETRY_DELAY_SCALE = 0.01


@pytest.fixture
def recording_plugin(install_plugin):
    plugin, config = install_plugin(RECORDING_PLUGIN)
    return plugin, config


def make_historical(project, config_id: int, **fields) -> HistoricalExport:
    fields.setdefault("after", START)
    fields.setdefault("before", START + timedelta(days=1))
    return HistoricalExport.objects.create(project=project, plugin_config_id=config_id, **fields)


def set_plugin_config(config_id: int, **values) -> None:
    config = PluginConfig.objects.get(pk=config_id)
    config.config = {**config.config, **values}
    config.save()


def run_until_it_waits_or_ends(export_id: int) -> list[Next]:
    """Run as the task would, again at once while the run hands over; the waits it asked for."""
    waits = []
    while (outcome := run_historical_export(export_id)) is not None:
        waits.append(outcome)
        if outcome.countdown:
            break
    return waits


def test_every_event_of_the_range_once_in_order_flagged_in_batches(project, recording_plugin):
    plugin, config = recording_plugin
    stored = store_events(project.id, 14)
    store_events(project.id, 3, start_ms=BASE_MS - 10_000)  # before the range
    job = make_historical(project, config["id"])
    assert run_until_it_waits_or_ends(job.pk) == []
    events = cached_list(plugin["id"], project.id, "events")
    expected = keyset_order(stored)
    assert [e["uuid"] for e in events] == [str(row.uuid) for row in expected]
    assert all(e["properties"][HISTORICAL_FLAG] is True for e in events)
    assert events[0]["properties"]["n"] == expected[0].properties["n"]
    assert events[0]["team_id"] == project.id
    assert events[0]["timestamp"].endswith("Z")
    assert set(events[0]) == {"uuid", "event", "distinct_id", "team_id", "properties", "timestamp", "person_id",
                              "person_properties", "elements"}  # fmt: skip
    assert [len(b) for b in cached_list(plugin["id"], project.id, "batches")] == [4, 4, 4, 2]
    job.refresh_from_db()
    assert (job.status, job.rows_exported, job.progress) == (ExportStatus.SUCCEEDED, 14, 100)


def test_retry_error_sends_the_same_batch_again_after_the_plugin_delays_and_nothing_after_it(project, recording_plugin):
    plugin, config = recording_plugin
    set_plugin_config(config["id"], fail_first=2)
    stored = store_events(project.id, 6)
    job = make_historical(project, config["id"])
    assert run_until_it_waits_or_ends(job.pk) == [Next(countdown=pytest.approx(0.06))]
    assert cached_list(plugin["id"], project.id, "batches") == []
    assert run_until_it_waits_or_ends(job.pk) == [Next(countdown=pytest.approx(0.12))]
    job.refresh_from_db()
    assert (job.status, job.batch_attempt, job.rows_exported) == (ExportStatus.RUNNING, 3, 0)
    assert run_until_it_waits_or_ends(job.pk) == []
    events = cached_list(plugin["id"], project.id, "events")
    assert [e["uuid"] for e in events] == [str(row.uuid) for row in keyset_order(stored)]
    warnings = PluginLogEntry.objects.filter(plugin_config_id=config["id"], type="WARN").values_list(
        "message", flat=True
    )
    assert any("attempt 1 of 4" in message for message in warnings)


def test_a_batch_that_keeps_asking_for_retries_fails_the_export_and_resume_sends_it_again(
    project, recording_plugin, mailoutbox
):
    plugin, config = recording_plugin
    set_plugin_config(config["id"], fail_first=4)
    store_events(project.id, 5)
    job = make_historical(project, config["id"])
    for _ in range(3):
        [wait] = run_until_it_waits_or_ends(job.pk)
        assert wait.countdown > 0
    assert run_until_it_waits_or_ends(job.pk) == []
    job.refresh_from_db()
    assert job.status == ExportStatus.FAILED
    assert "after 4 attempts" in job.error and "Resume" in job.error
    assert cached_list(plugin["id"], project.id, "batches") == []
    assert PluginConfig.objects.get(pk=config["id"]).error["message"].startswith("export_events")
    assert mailoutbox == []  # the requester has no email address here

    control.resume(job)
    assert run_until_it_waits_or_ends(job.pk) == []  # call 5 and on succeed
    job.refresh_from_db()
    assert (job.status, job.rows_exported) == (ExportStatus.SUCCEEDED, 5)
    assert [len(b) for b in cached_list(plugin["id"], project.id, "batches")] == [4, 1]


def test_pause_stops_after_the_batch_in_flight_and_resume_carries_on(project, recording_plugin, settings):
    plugin, config = recording_plugin
    settings.EXPORT_SLICE_SECONDS = 0  # one batch per run
    stored = store_events(project.id, 10)
    job = make_historical(project, config["id"])
    assert run_historical_export(job.pk) == Next()
    control.pause(job)
    assert run_historical_export(job.pk) is None
    job.refresh_from_db()
    assert (job.status, job.rows_exported) == (ExportStatus.PAUSED, 4)
    control.resume(job)
    assert job.status == ExportStatus.QUEUED
    while run_historical_export(job.pk) is not None:
        pass
    events = cached_list(plugin["id"], project.id, "events")
    assert [e["uuid"] for e in events] == [str(row.uuid) for row in keyset_order(stored)]


def test_a_disabled_config_fails_the_export_with_what_to_do(project, recording_plugin):
    _, config = recording_plugin
    store_events(project.id, 2)
    PluginConfig.objects.filter(pk=config["id"]).update(enabled=False)
    job = make_historical(project, config["id"])
    run_until_it_waits_or_ends(job.pk)
    job.refresh_from_db()
    assert job.status == ExportStatus.FAILED
    assert job.error == f"plugin config {config['id']} is disabled or was deleted; enable it, then resume this export"


def test_only_historical_exports_pause(project):
    with pytest.raises(control.InvalidTransition, match="Only historical exports"):
        control.pause(make_export(project))
