"""Step 8 and the default queue end to end: on_event, jobs, export_events retries, dead letters."""

from datetime import timedelta

import pytest
from django.utils import timezone

from bklog_app.models import DeadLetter
from bklog_app.plugins.models import PluginJob, PluginStorage
from pipeline.deadletters.replay import replay
from pipeline.plugins.job_queue import hand_over_due_jobs, schedule_job
from pipeline.plugins.meta import Cache
from tests.factories import wait_for_events
from tests.plugins.conftest import cache_values, event, logs, post_batch, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_on_event_and_jobs_started_from_on_event_and_process_event(
    client, project, celery_worker, local_plugin, install
):
    path = local_plugin(
        """
        import time

        def process_event(event, meta):
            meta.jobs.from_process_event({"uuid": event["uuid"]}).run_now()
            return event

        def on_event(event, meta):
            meta.cache.lpush("on_event", [event])
            meta.jobs.from_on_event({"uuid": event["uuid"]}).run_now()
            meta.jobs.later({"queued_at": time.time()}).run_in(2, "seconds")

        def from_process_event(payload, meta):
            meta.cache.lpush("ran", ["process_event:" + payload["uuid"]])

        def from_on_event(payload, meta):
            meta.cache.lpush("ran", ["on_event:" + payload["uuid"]])

        def later(payload, meta):
            meta.cache.lpush("later", [{"queued_at": payload["queued_at"], "ran_at": time.time()}])

        jobs = {"from_process_event": from_process_event, "from_on_event": from_on_event, "later": later}
        """
    )
    plugin, config = install({"source_type": "local", "path": path})
    assert plugin["capabilities"]["methods"] == ["process_event", "on_event"]
    assert plugin["capabilities"]["jobs"] == ["from_on_event", "from_process_event", "later"]

    sent = event("signed_up", "user-1", plan="pro")
    sent["properties"]["$elements"] = [{"tag_name": "button", "text": "Buy", "attr_class": ["primary"]}]
    post_batch(client, project.api_token, [sent])
    stored = wait_for_events(project.id, 1)[0]

    received = wait_until(lambda: cache_values(plugin["id"], project.id, "on_event"), message="on_event")
    assert len(received) == 1
    got = received[0]
    assert got["uuid"] == sent["uuid"]
    assert got["event"] == "signed_up"
    assert got["distinct_id"] == "user-1"
    assert got["team_id"] == project.id
    assert got["properties"]["plan"] == "pro"
    assert got["timestamp"] == stored["timestamp"]
    assert got["person_id"] == stored["person_id"]
    assert "person_properties" in got
    assert got["elements"][0]["tag_name"] == "button"
    assert got["elements"][0]["text"] == "Buy"

    ran = wait_until(
        lambda: (
            len(cache_values(plugin["id"], project.id, "ran")) >= 2 and cache_values(plugin["id"], project.id, "ran")
        ),
        message="both jobs",
    )
    assert sorted(ran) == sorted([f"process_event:{sent['uuid']}", f"on_event:{sent['uuid']}"])

    later = wait_until(lambda: cache_values(plugin["id"], project.id, "later"), message="the run_in job")
    assert later[0]["ran_at"] - later[0]["queued_at"] >= 2
    job = PluginJob.objects.get(plugin_config_id=config["id"], name="later")
    assert job.status == "succeeded"
    # Runs once: the job row is claimed, so a second message (or poll) does nothing.
    hand_over_due_jobs()
    assert cache_values(plugin["id"], project.id, "later") == later
    assert PluginJob.objects.filter(plugin_config_id=config["id"], status="succeeded").count() == 3


def test_a_job_due_later_waits_in_the_database_for_the_poller(project, celery_worker, local_plugin, install):
    path = local_plugin(
        """
        def remember(payload, meta):
            meta.cache.lpush("ran", [payload])

        jobs = {"remember": remember}
        """
    )
    plugin, config = install({"source_type": "local", "path": path})
    job_id = schedule_job(config["id"], "remember", {"n": 1}, timezone.now() + timedelta(hours=1))
    assert PluginJob.objects.get(pk=job_id).status == "pending"
    assert hand_over_due_jobs() == 0  # not due yet

    PluginJob.objects.filter(pk=job_id).update(run_at=timezone.now())
    assert hand_over_due_jobs() == 1
    assert wait_until(lambda: cache_values(plugin["id"], project.id, "ran"), message="the job") == [{"n": 1}]
    wait_until(lambda: PluginJob.objects.get(pk=job_id).status == "succeeded", message="succeeded")


def test_export_events_retry_error_is_retried_then_dead_lettered_then_replayed_once(
    client, project, celery_worker, local_plugin, install, api_client
):
    path = local_plugin(
        """
        from pipeline.plugins.api import RetryError

        def export_events(events, meta):
            attempt = meta.cache.incr("attempts")
            if not meta.storage.get("fixed"):
                raise RetryError("the warehouse is busy (attempt %d)" % attempt)
            meta.cache.lpush("exported", [[e["uuid"] for e in events]])
        """
    )
    plugin, config = install(
        {"source_type": "local", "path": path, "name": "Exporter"},
        config={"export_events_buffer_seconds": 1},
    )
    sent = [event("a", "u1"), event("b", "u2"), event("ignored", "u3")]
    api_client.patch(
        f"/api/projects/{project.id}/plugin_configs/{config['id']}/",
        {"config": {"export_events_to_ignore": "ignored"}},
        format="json",
    )
    post_batch(client, project.api_token, sent)
    wait_for_events(project.id, 3)

    letter = wait_until(
        lambda: DeadLetter.objects.filter(project=project, kind="export_events").first(),
        timeout=60,
        message="the dead letter",
    )
    assert letter.context == {"plugin_config_id": config["id"], "attempts": 4}
    assert sorted(e["uuid"] for e in letter.payload["events"]) == sorted(e["uuid"] for e in sent[:2])
    assert "RetryError: the warehouse is busy (attempt 4)" in letter.error
    assert Cache(plugin["id"], project.id).get("attempts") == 4  # 1 attempt + 3 retries

    # The schedule, as the plugin's log tells it (delays are scaled by PLUGIN_RETRY_DELAY_SCALE here).
    warnings = [e["message"] for e in reversed(logs(api_client, project.id, config["id"], type="WARN"))]
    assert [w.split(";")[0] for w in warnings] == [
        "export_events asked for a retry (attempt 1 of 4)",
        "export_events asked for a retry (attempt 2 of 4)",
        "export_events asked for a retry (attempt 3 of 4)",
    ]
    assert [w.split("; ")[1].split(":")[0] for w in warnings] == [
        "next attempt in 0.6 s",
        "next attempt in 1.2 s",
        "next attempt in 2.4 s",
    ]
    errors = logs(api_client, project.id, config["id"], type="ERROR")
    assert any("gave up after 4 attempt(s)" in e["message"] for e in errors)

    # Fixed: the replay exports the batch once.
    PluginStorage.objects.create(plugin_config_id=config["id"], key="fixed", value=True)
    assert replay(letter) is True
    assert replay(letter) is False  # replayed already
    exported = wait_until(lambda: cache_values(plugin["id"], project.id, "exported"), message="the replay")
    assert [sorted(batch) for batch in exported] == [sorted(e["uuid"] for e in sent[:2])]
    letter.refresh_from_db()
    assert letter.replayed_at is not None
    assert DeadLetter.objects.filter(project=project, kind="export_events").count() == 1


def test_on_event_retry_error_then_success(client, project, celery_worker, local_plugin, install, api_client):
    path = local_plugin(
        """
        from pipeline.plugins.api import RetryError

        def on_event(event, meta):
            if meta.cache.incr("calls") < 3:
                raise RetryError("not yet")
            meta.cache.lpush("done", [event["uuid"]])
        """
    )
    plugin, config = install({"source_type": "local", "path": path})
    sent = event("x")
    post_batch(client, project.api_token, [sent])
    assert wait_until(lambda: cache_values(plugin["id"], project.id, "done"), message="on_event") == [sent["uuid"]]
    warnings = [e["message"] for e in logs(api_client, project.id, config["id"], type="WARN")]
    assert len(warnings) == 2 and all("next attempt in" in w for w in warnings)
    assert not DeadLetter.objects.filter(project=project).exists()
