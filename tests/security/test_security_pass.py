"""Security pass: what source plugins, capture tokens and API keys cannot reach, and where
secrets never show."""

import textwrap

import orjson
import pytest
from rest_framework.test import APIClient

from tests.factories import api_client_for, make_project

pytestmark = pytest.mark.django_db

PLUGIN_JSON = orjson.dumps({"name": "probe", "main": "plugin.py", "config": []}).decode()
SECRET = "s3cret-value-that-must-not-leak"


def source_plugin(project, body: str):
    staff = api_client_for(project.organization, staff=True)
    code = "def process_event(event, meta):\n" + textwrap.indent(textwrap.dedent(body), "    ") + "\n    return event\n"
    return staff, staff.post(
        "/api/plugins/",
        {"name": "probe", "source_type": "source", "source": {"plugin.json": PLUGIN_JSON, "plugin.py": code}},
        format="json",
    )


def dry_run(staff, project, plugin_id: int) -> dict:
    config = staff.post(
        f"/api/projects/{project.id}/plugin_configs/",
        {"plugin": plugin_id, "enabled": False, "order": 0, "config": {}},
        format="json",
    ).json()
    return staff.post(
        f"/api/projects/{project.id}/plugin_configs/{config['id']}/test/",
        {"event": {"event": "e", "distinct_id": "d"}},
        format="json",
    ).json()


@pytest.mark.parametrize(
    "body",
    [
        "import os\nos.listdir('/')",
        "import socket\nsocket.create_connection(('127.0.0.1', 6379))",
        "import subprocess",
        "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9/')",
        "open('/etc/passwd').read()",
        "import json\njson.codecs.open('/etc/passwd')",
        "getattr(meta, '_' + 'config')",
        "eval('1')",
        "exec('x = 1')",
        "import importlib",
        "from django.conf import settings\nsettings.SECRET_KEY",
        "import bklog_app.models",
    ],
)
def test_source_plugins_cannot_escape(project, body, celery_worker):  # test runs run on a worker
    staff, response = source_plugin(project, body)
    if response.status_code == 400:  # refused when compiled: fine too
        assert response.json()["attr"] == "source"
        return
    assert response.status_code == 201, response.content
    result = dry_run(staff, project, response.json()["id"])
    assert result["error"] is not None, (body, result)
    assert "root:" not in orjson.dumps(result).decode()


@pytest.mark.parametrize(
    "body", ["().__class__.__bases__[0].__subclasses__()", "meta.__dict__", "(lambda: 0).__globals__"]
)
def test_dunder_access_is_refused_at_compile_time(project, body):
    _, response = source_plugin(project, body)
    assert response.status_code == 400
    assert response.json()["attr"] == "source"


def test_a_plugin_sees_only_its_own_projects_storage(project):
    """Storage and cache are keyed by plugin config: the same key in another project is another value."""
    from bklog_app.plugins.models import PluginConfig

    staff, created = source_plugin(project, "pass")
    plugin_id = created.json()["id"]
    other = make_project(organization=project.organization)
    for p in (project, other):
        staff.post(f"/api/projects/{p.id}/plugin_configs/", {"plugin": plugin_id, "enabled": True, "order": 0,
                   "config": {}}, format="json")  # fmt: skip
    from pipeline.plugins.meta import Cache, Storage

    mine, theirs = PluginConfig.objects.filter(plugin_id=plugin_id).order_by("project_id")
    Storage(mine.pk).set("k", "mine")
    assert Storage(theirs.pk).get("k") is None
    Cache(plugin_id, project.id).set("k", "mine")
    assert Cache(plugin_id, other.id).get("k") is None


def test_capture_tokens_cannot_read_anything(client, project):
    for header in (f"Bearer {project.api_token}", f"Token {project.api_token}"):
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=header)
        for url in (f"/api/projects/{project.id}/events/", "/api/projects/", f"/api/projects/{project.id}/persons/"):
            assert api.get(url).status_code == 401
    assert client.get(f"/api/projects/{project.id}/events/?token={project.api_token}").status_code == 401


def test_secrets_never_appear_in_api_responses_or_logs(api_client, project):
    plugin = api_client.post(
        "/api/plugins/", {"name": "w", "source_type": "builtin", "builtin": "webhook_forwarder"}, format="json"
    ).json()
    created = api_client.post(
        f"/api/projects/{project.id}/plugin_configs/",
        {
            "plugin": plugin["id"],
            "enabled": True,
            "order": 0,
            "config": {"url": "http://127.0.0.1:9/", "auth_token": SECRET},
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    config_id = created.json()["id"]
    base = f"/api/projects/{project.id}/plugin_configs/"
    responses = [
        created,
        api_client.get(base),
        api_client.get(f"{base}{config_id}/"),
        api_client.patch(f"{base}{config_id}/", {"config": {"timeout_seconds": 3}}, format="json"),
        api_client.get(f"{base}{config_id}/logs/"),
        api_client.post(f"{base}{config_id}/test/", {"event": {"event": "e", "distinct_id": "d"}}, format="json"),
        api_client.patch(
            f"{base}{config_id}/", {"config": {"url": "not a url at all", "timeout_seconds": "x"}}, format="json"
        ),
    ]
    for response in responses:
        assert SECRET not in response.content.decode(), response.content[:300]
    from bklog_app.plugins.models import PluginConfig, PluginLogEntry

    assert PluginConfig.objects.get(pk=config_id).config["auth_token"] == SECRET  # kept, just never shown
    assert not PluginLogEntry.objects.filter(message__contains=SECRET).exists()
