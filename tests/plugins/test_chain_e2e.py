"""Ingestion step 4 end to end: capture API -> real worker -> plugin chain -> ClickHouse."""

import base64

import pytest

from bklog_app.plugins.models import PluginConfig, PluginLogEntry
from tests.factories import wait_for_events
from tests.plugins.conftest import event, post_batch, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_process_event_adds_properties_and_the_event_is_stored_once(
    client, project, celery_worker, local_plugin, install
):
    path = local_plugin(
        """
        def process_event(event, meta):
            event["properties"]["enriched"] = True
            event["properties"]["greeting"] = "hello " + event["distinct_id"]
            return event
        """
    )
    plugin, config = install({"source_type": "local", "path": path, "name": "Enricher"})
    assert plugin["capabilities"] == {"methods": ["process_event"], "jobs": [], "scheduled_tasks": []}

    sent = event("signed_up", "user-7", plan="pro")
    post_batch(client, project.api_token, [sent])

    stored = wait_for_events(project.id, 1)
    assert len(stored) == 1
    properties = stored[0]["properties"]
    assert stored[0]["uuid"] == sent["uuid"]
    assert properties["enriched"] is True
    assert properties["greeting"] == "hello user-7"
    assert properties["plan"] == "pro"
    assert properties["$plugins_succeeded"] == [f"Enricher ({config['id']})"]
    assert "$plugins_failed" not in properties


def test_process_event_that_raises_still_stores_the_event_and_records_the_error(
    client, project, celery_worker, local_plugin, install, api_client
):
    path = local_plugin(
        """
        def process_event(event, meta):
            event["properties"]["half_done"] = True
            raise ValueError("cannot enrich " + event["event"])
        """
    )
    _, broken = install({"source_type": "local", "path": path, "name": "Broken"}, order=0)
    later = local_plugin(
        """
        def process_event(event, meta):
            event["properties"]["later"] = "ran"
            return event
        """
    )
    _, after = install({"source_type": "local", "path": later, "name": "Later"}, order=1)

    post_batch(client, project.api_token, [event("purchase", "user-1")])

    stored = wait_for_events(project.id, 1)[0]
    assert stored["event"] == "purchase"
    assert "half_done" not in stored["properties"]  # the failed plugin's changes do not leak
    assert stored["properties"]["later"] == "ran"  # the chain went on
    assert stored["properties"]["$plugins_failed"] == [f"Broken ({broken['id']})"]
    assert stored["properties"]["$plugins_succeeded"] == [f"Later ({after['id']})"]

    error = PluginConfig.objects.get(pk=broken["id"]).error
    assert error["name"] == "ValueError"
    assert "cannot enrich purchase" in error["message"]
    assert "Traceback" in error["traceback"]
    assert error["event"]["event"] == "purchase"
    assert error["time"]
    entries = api_client.get(f"/api/projects/{project.id}/plugin_configs/{broken['id']}/logs/").json()["results"]
    assert any(e["type"] == "ERROR" and "cannot enrich purchase" in e["message"] for e in entries)


def test_process_event_returning_none_drops_only_that_event(client, project, celery_worker, local_plugin, install):
    from bklog_app.persons.models import PersonDistinctId

    path = local_plugin(
        """
        def process_event(event, meta):
            if event["properties"].get("drop"):
                return None
            return event
        """
    )
    install({"source_type": "local", "path": path})
    post_batch(
        client,
        project.api_token,
        [
            event("kept", "keeper-1"),
            {**event("dropped", "dropped-user", drop=True), "$set": {"email": "x@example.com"}},
            event("kept", "keeper-2"),
        ],
    )

    stored = wait_for_events(project.id, 2)
    # One more event, sent after, proves the batch with the dropped event was fully processed.
    post_batch(client, project.api_token, [event("marker", "keeper-3")])
    stored = wait_for_events(project.id, 3)
    assert sorted(e["event"] for e in stored) == ["kept", "kept", "marker"]
    assert not PersonDistinctId.objects.filter(project=project, distinct_id="dropped-user").exists()


def test_process_event_may_change_distinct_id(client, project, celery_worker, local_plugin, install):
    path = local_plugin(
        """
        def process_event(event, meta):
            event["distinct_id"] = "canonical-" + event["distinct_id"].lower()
            return event
        """
    )
    install({"source_type": "local", "path": path})
    post_batch(client, project.api_token, [event("login", "ALICE")])
    stored = wait_for_events(project.id, 1)[0]
    assert stored["distinct_id"] == "canonical-alice"


def test_changing_team_id_is_an_error_of_that_plugin(client, project, celery_worker, local_plugin, install):
    path = local_plugin(
        """
        def process_event(event, meta):
            event["team_id"] = event["team_id"] + 1000
            event["properties"]["moved"] = True
            return event
        """
    )
    _, config = install({"source_type": "local", "path": path, "name": "Mover"})
    post_batch(client, project.api_token, [event("x")])
    stored = wait_for_events(project.id, 1)[0]
    assert "moved" not in stored["properties"]
    assert stored["properties"]["$plugins_failed"] == [f"Mover ({config['id']})"]
    assert "changed team_id" in PluginConfig.objects.get(pk=config["id"]).error["message"]


def test_config_values_secret_and_attachment_reach_the_plugin(
    client, project, celery_worker, local_plugin, install, api_client
):
    path = local_plugin(
        """
        def process_event(event, meta):
            event["properties"]["region"] = meta.config["region"]
            event["properties"]["api_key"] = meta.config["api_key"]
            certificate = meta.attachments["certificate"]
            event["properties"]["certificate"] = [
                certificate["file_name"], certificate["content_type"], certificate["contents"].decode()
            ]
            return event
        """,
        config=[
            {"key": "region", "type": "choice", "choices": ["eu", "us"], "required": True},
            {"key": "api_key", "type": "string", "secret": True, "required": True},
            {"key": "certificate", "type": "attachment", "required": True},
        ],
    )
    certificate = {
        "file_name": "ca.pem",
        "content_type": "application/x-pem-file",
        "contents_base64": base64.b64encode(b"-----BEGIN CERTIFICATE-----").decode(),
    }
    _, config = install(
        {"source_type": "local", "path": path},
        config={"region": "eu", "api_key": "s3cr3t-value", "certificate": certificate},
    )
    assert config["config"] == {"region": "eu", "api_key": "**************"}
    assert config["attachments"]["certificate"]["file_name"] == "ca.pem"
    read = api_client.get(f"/api/projects/{project.id}/plugin_configs/{config['id']}/").json()
    assert read["config"]["api_key"] == "**************"
    assert "s3cr3t-value" not in str(read)

    post_batch(client, project.api_token, [event("x")])
    stored = wait_for_events(project.id, 1)[0]["properties"]
    assert stored["region"] == "eu"
    assert stored["api_key"] == "s3cr3t-value"
    assert stored["certificate"] == ["ca.pem", "application/x-pem-file", "-----BEGIN CERTIFICATE-----"]

    # Sending the mask back keeps the secret; changing another value reloads the workers.
    response = api_client.patch(
        f"/api/projects/{project.id}/plugin_configs/{config['id']}/",
        {"config": {"region": "us", "api_key": "**************"}},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert PluginConfig.objects.get(pk=config["id"]).config["api_key"] == "s3cr3t-value"
    post_batch(client, project.api_token, [event("y")])
    stored = wait_for_events(project.id, 1, event="y")[0]["properties"]
    assert (stored["region"], stored["api_key"]) == ("us", "s3cr3t-value")


def test_setup_plugin_failure_disables_the_config_with_the_reason(
    client, project, celery_worker, local_plugin, install
):
    path = local_plugin(
        """
        def setup_plugin(meta):
            raise ConnectionError("the upstream service refused us")

        def process_event(event, meta):
            event["properties"]["never"] = True
            return event
        """
    )
    _, config = install({"source_type": "local", "path": path})
    post_batch(client, project.api_token, [event("x")])
    stored = wait_for_events(project.id, 1)[0]
    assert "never" not in stored["properties"]
    row = wait_until(lambda: PluginConfig.objects.filter(pk=config["id"], enabled=False).first(), message="disabled")
    assert "setup_plugin failed" in row.error["message"]
    assert "the upstream service refused us" in row.error["message"]
    assert PluginLogEntry.objects.filter(
        plugin_config_id=config["id"], type="ERROR", message__contains="disabled"
    ).exists()
