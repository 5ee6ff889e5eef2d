"""The REST contract of issue 3 §11, and every bad input with its exact status and error body."""

import io
import json

import pytest
from django.core.management import call_command

from bklog_app.plugins.models import PluginConfig, PluginLogEntry, PluginStorage
from tests.factories import api_client_for, make_project

pytestmark = pytest.mark.django_db


def create_plugin(client, **body):
    return client.post("/api/plugins/", body, format="json")


def test_create_builtin_plugin_answers_id_name_source_type_and_capabilities(api_client):
    response = create_plugin(api_client, name="PII filter", source_type="builtin", builtin="property_filter")
    assert response.status_code == 201
    body = response.json()
    assert {"id", "name", "source_type", "capabilities"} <= body.keys()
    assert body["name"] == "PII filter"
    assert body["source_type"] == "builtin"
    assert body["capabilities"] == {"methods": ["setup_plugin", "process_event"], "jobs": [], "scheduled_tasks": []}
    assert api_client.get(f"/api/plugins/{body['id']}/").json()["id"] == body["id"]
    assert [p["id"] for p in api_client.get("/api/plugins/").json()["results"]] == [body["id"]]


def test_builtins_are_listed(api_client):
    response = api_client.get("/api/plugins/builtins/")
    assert response.status_code == 200
    names = [b["name"] for b in response.json()["results"]]
    assert names == [
        "bot_filter", "downsampling", "geoip", "pii_hashing", "property_filter", "taxonomy_standardiser",
        "url_masking", "user_agent_parser", "webhook_forwarder",
    ]  # fmt: skip
    webhook = next(b for b in response.json()["results"] if b["name"] == "webhook_forwarder")
    assert webhook["capabilities"]["methods"] == ["setup_plugin", "export_events"]


@pytest.mark.parametrize(
    ("body", "attr", "detail"),
    [
        ({"source_type": "builtin", "builtin": "nope"}, "builtin", "there is no built-in plugin 'nope'"),
        ({"source_type": "builtin"}, "builtin", "Name the built-in plugin"),
        ({"source_type": "local", "path": "../../etc"}, "path", "must name a folder inside PLUGINS_DIR"),
        ({"source_type": "local", "path": "missing-folder"}, "path", "has no plugin.json"),
        ({"source_type": "local"}, "path", "Name the plugin's folder"),
        ({"source_type": "wasm"}, "source_type", '"wasm" is not a valid choice.'),
        ({"name": "x"}, "source_type", "This field is required."),
    ],
)
def test_bad_plugin_bodies_answer_400_naming_the_field(api_client, body, attr, detail):
    response = create_plugin(api_client, **body)
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "validation_error"
    assert error["attr"] == attr
    assert detail in error["detail"]


@pytest.mark.parametrize(
    ("source", "detail"),
    [
        ({"plugin.py": "x = 1"}, "a source plugin needs a plugin.json file"),
        ({"plugin.json": "{nope", "plugin.py": ""}, "plugin.json is not valid JSON"),
        ({"plugin.json": '{"description": "x"}', "plugin.py": ""}, "plugin.json needs a non-empty string `name`"),
        ({"plugin.json": '{"name": "x"}'}, "needs its main file 'plugin.py'"),
        (
            {"plugin.json": '{"name": "x", "config": [{"key": "a", "type": "colour"}]}', "plugin.py": ""},
            "type must be one of",
        ),
        ({"plugin.json": '{"name": "x"}', "plugin.py": "import os"}, "import of 'os' is not allowed"),
        ({"plugin.json": '{"name": "x"}', "plugin.py": "def f(:"}, "does not compile"),
        ("not files", 'Send {"plugin.json"'),
    ],
)
def test_bad_source_plugins_answer_400(project, source, detail):
    staff = api_client_for(project.organization, staff=True)
    response = create_plugin(staff, name="x", source_type="source", source=source)
    assert response.status_code == 400, response.content
    assert response.json()["attr"] == "source"
    assert detail in response.json()["detail"]


def test_api_needs_a_key(client):
    response = client.get("/api/plugins/")
    assert response.status_code == 401
    assert response.json()["type"] == "authentication_error"


@pytest.fixture
def schema_plugin(api_client, local_plugin):
    path = local_plugin(
        "def process_event(event, meta):\n    return event\n",
        config=[
            {"key": "url", "type": "string", "required": True},
            {"key": "mode", "type": "choice", "choices": ["fast", "safe"], "default": "safe"},
            {"key": "token", "type": "string", "secret": True},
            {"key": "limit", "type": "number"},
            {"key": "mapping", "type": "json"},
            {"key": "key_file", "type": "attachment"},
        ],
    )
    return create_plugin(api_client, source_type="local", path=path).json()


@pytest.mark.parametrize(
    ("config", "attr", "detail"),
    [
        ({}, "config__url", "This field is required."),
        ({"url": 5}, "config__url", "Must be a string."),
        ({"url": "x", "mode": "slow"}, "config__mode", "Must be one of: fast, safe."),
        ({"url": "x", "limit": "ten"}, "config__limit", "Must be a number."),
        ({"url": "x", "mapping": "{bad"}, "config__mapping", "Must be JSON"),
        ({"url": "x", "colour": "red"}, "config__colour", "Unknown config key 'colour'"),
        ({"url": "x", "key_file": "plain"}, "config__key_file", "An attachment is an object"),
        ({"url": "x", "key_file": {"contents_base64": "%%%"}}, "config__key_file", "not valid base64"),
        ({"url": "x", "export_events_buffer_seconds": 0}, "config__export_events_buffer_seconds", "from 1 to 600"),
        (
            {"url": "x", "export_events_buffer_bytes": 200 * 1024 * 1024},
            "config__export_events_buffer_bytes",
            "100 MiB",
        ),
    ],
)
def test_bad_configs_answer_400_naming_the_field(api_client, project, schema_plugin, config, attr, detail):
    response = api_client.post(
        f"/api/projects/{project.id}/plugin_configs/",
        {"plugin": schema_plugin["id"], "enabled": True, "order": 0, "config": config},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert response.json()["attr"] == attr
    assert detail in response.json()["detail"]


def test_config_create_patch_masking_and_defaults(api_client, project, schema_plugin):
    url = f"/api/projects/{project.id}/plugin_configs/"
    response = api_client.post(
        url,
        {"plugin": schema_plugin["id"], "enabled": True, "order": 3, "config": {"url": "https://x", "token": "t0p"}},
        format="json",
    )
    assert response.status_code == 201
    created = response.json()
    assert created["config"] == {"url": "https://x", "mode": "safe", "token": "**************"}
    assert (created["enabled"], created["order"], created["plugin"], created["error"]) == (
        True,
        3,
        schema_plugin["id"],
        None,
    )
    stored = PluginConfig.objects.get(pk=created["id"])
    assert stored.config["token"] == "t0p"

    detail = f"{url}{created['id']}/"
    response = api_client.patch(detail, {"enabled": False, "order": 1}, format="json")
    assert response.status_code == 200
    assert (response.json()["enabled"], response.json()["order"]) == (False, 1)
    response = api_client.patch(detail, {"config": {"token": "new", "mode": "fast"}}, format="json")
    assert response.json()["config"] == {"url": "https://x", "mode": "fast", "token": "**************"}
    assert PluginConfig.objects.get(pk=created["id"]).config["token"] == "new"
    assert api_client.get(url).json()["results"][0]["id"] == created["id"]

    other = create_plugin(api_client, source_type="builtin", builtin="geoip").json()
    response = api_client.patch(detail, {"plugin": other["id"]}, format="json")
    assert response.status_code == 400
    assert response.json()["attr"] == "plugin"
    assert api_client.delete(detail).status_code == 204
    assert api_client.get(detail).status_code == 404


def test_configs_of_other_organizations_are_404(api_client, project, schema_plugin):
    foreign = make_project()
    response = api_client.post(
        f"/api/projects/{foreign.id}/plugin_configs/",
        {"plugin": schema_plugin["id"], "config": {"url": "x"}},
        format="json",
    )
    assert response.status_code == 404
    stranger = api_client_for(foreign.organization)
    response = stranger.post(
        f"/api/projects/{foreign.id}/plugin_configs/",
        {"plugin": schema_plugin["id"], "config": {"url": "x"}},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["attr"] == "plugin"
    assert stranger.get(f"/api/plugins/{schema_plugin['id']}/").status_code == 404


def test_logs_newest_first_with_filters(api_client, project, schema_plugin):
    config = PluginConfig.objects.create(project=project, plugin_id=schema_plugin["id"], config={"url": "x"})
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    for i, (source, type_) in enumerate([("SYSTEM", "INFO"), ("PLUGIN", "ERROR"), ("CONSOLE", "INFO")]):
        PluginLogEntry.objects.create(
            plugin_config=config,
            project_id=project.id,
            source=source,
            type=type_,
            message=f"line {i}",
            timestamp=now + timedelta(seconds=i),
        )
    url = f"/api/projects/{project.id}/plugin_configs/{config.pk}/logs/"
    results = api_client.get(url).json()["results"]
    assert [r["message"] for r in results] == ["line 2", "line 1", "line 0"]
    assert {"timestamp", "source", "type", "message"} <= results[0].keys()
    assert [r["message"] for r in api_client.get(url, {"type": "ERROR"}).json()["results"]] == ["line 1"]
    assert [r["message"] for r in api_client.get(url, {"limit": 1}).json()["results"]] == ["line 2"]
    bad = api_client.get(url, {"type": "LOUD"})
    assert bad.status_code == 400 and bad.json()["attr"] == "type"


def run(api_client, config, event):
    return api_client.post(
        f"/api/projects/{config.project_id}/plugin_configs/{config.pk}/test/", {"event": event}, format="json"
    )


def test_test_run_answers_the_output_and_logs_without_side_effects(api_client, local_plugin_config, celery_worker):
    config = local_plugin_config(
        """
        def setup_plugin(meta):
            meta.state["suffix"] = "!"

        def process_event(event, meta):
            print("saw", event["event"])
            meta.logger.warning("careful")
            meta.storage.set("seen", event["event"])
            meta.cache.set("seen", 1)
            meta.jobs.follow_up({"a": 1}).run_now()
            event["properties"]["shout"] = event["event"].upper() + meta.state["suffix"]
            return event

        jobs = {"follow_up": lambda payload, meta: None}
        """
    )
    response = run(api_client, config, {"event": "hello", "distinct_id": "d1", "properties": {"a": 1}})
    assert response.status_code == 200
    body = response.json()
    assert body["error"] is None
    assert body["event"]["properties"] == {"a": 1, "shout": "HELLO!"}
    assert body["event"]["team_id"] == config.project_id
    assert body["event"]["distinct_id"] == "d1"
    lines = [(line["source"], line["type"], line["message"]) for line in body["logs"]]
    assert ("CONSOLE", "INFO", "saw hello") in lines
    assert ("PLUGIN", "WARN", "careful") in lines
    assert any(source == "SYSTEM" and "job 'follow_up' would run" in message for source, _, message in lines)
    assert not PluginStorage.objects.exists()
    assert not PluginLogEntry.objects.exists()
    from bklog_app.plugins.models import PluginJob

    assert not PluginJob.objects.exists()
    config.refresh_from_db()
    assert config.error is None


def test_test_run_answers_a_drop_and_errors(api_client, local_plugin_config, settings, celery_worker):
    dropper = local_plugin_config("def process_event(event, meta):\n    return None\n")
    assert run(api_client, dropper, {"event": "x"}).json() == {"event": None, "logs": [], "error": None}

    raiser = local_plugin_config("def process_event(event, meta):\n    raise KeyError('plan')\n")
    body = run(api_client, raiser, {"event": "x"}).json()
    assert body["event"] is None
    assert body["error"] == {"name": "KeyError", "message": "'plan'"}
    assert body["logs"][-1]["type"] == "ERROR"

    mover = local_plugin_config("def process_event(event, meta):\n    event['team_id'] = 0\n    return event\n")
    assert run(api_client, mover, {"event": "x"}).json()["error"]["name"] == "PluginOutputError"

    settings.PLUGIN_TEST_RUN_TIMEOUT_SECONDS = 0.5
    sleeper = local_plugin_config("import time\ndef process_event(event, meta):\n    time.sleep(30)\n")
    body = run(api_client, sleeper, {"event": "x"}).json()
    assert body["error"]["name"] == "PluginTimeoutError"
    assert "time limit of 0.5 s (PLUGIN_TEST_RUN_TIMEOUT_SECONDS)" in body["error"]["message"]

    bad = api_client.post(
        f"/api/projects/{dropper.project_id}/plugin_configs/{dropper.pk}/test/", {"event": [1]}, format="json"
    )
    assert bad.status_code == 400
    assert bad.json()["attr"] == "event"


def test_create_api_key_staff_makes_the_user_staff():
    from django.contrib.auth import get_user_model

    out = io.StringIO()
    call_command("create_api_key", "ops", "--staff", "--org", "Ops", "--json", stdout=out)
    assert json.loads(out.getvalue())["key"].startswith("bkl_")
    assert get_user_model().objects.get(username="ops").is_staff


def test_the_documented_example_works(api_client, project, settings, tmp_path):
    """The "Writing a plugin" example, taken from the docs as written, runs as the docs say."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    section = (root / "docs" / "plugins.md").read_text()
    manifest = re.search(r"```json\n(.*?)```", section, re.S).group(1)
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    settings.PLUGINS_DIR = str(tmp_path)
    (tmp_path / "hello").mkdir()
    (tmp_path / "hello" / "plugin.json").write_text(manifest)
    (tmp_path / "hello" / "plugin.py").write_text(code)

    plugin = create_plugin(api_client, source_type="local", path="hello").json()
    assert plugin["capabilities"] == {
        "methods": ["setup_plugin", "teardown_plugin", "process_event", "on_event", "export_events"],
        "jobs": ["welcome"],
        "scheduled_tasks": ["run_every_hour"],
    }
    response = api_client.post(
        f"/api/projects/{project.id}/plugin_configs/",
        {"plugin": plugin["id"], "enabled": True, "order": 0, "config": {"greeting": "Hi", "api_key": "s3cr3t"}},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = run(
        api_client, PluginConfig.objects.get(pk=response.json()["id"]), {"event": "signed_up", "distinct_id": "ann"}
    )
    assert body.json()["error"] is None
    assert body.json()["event"]["properties"]["greeting"] == "Hi, ann"
