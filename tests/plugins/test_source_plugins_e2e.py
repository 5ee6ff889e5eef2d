"""Source plugins: staff only, RestrictedPython, allow-listed imports, no files, a time limit."""

import orjson
import pytest

from tests.factories import api_client_for, wait_for_events
from tests.plugins.conftest import WORKER_TIMEOUT_SECONDS, event, logs, post_batch, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MANIFEST = orjson.dumps(
    {"name": "Sandboxed", "config": [{"key": "mode", "type": "choice", "choices": ["os", "file", "loop", "ok"]}]}
).decode()
CODE = """
import json
import time

def process_event(event, meta):
    mode = meta.config["mode"]
    if mode == "os":
        import os
        event["properties"]["cwd"] = os.getcwd()
    elif mode == "file":
        event["properties"]["secret"] = open("/etc/passwd").read()
    elif mode == "loop":
        while True:
            pass
    else:
        print("processing", event["event"])
        meta.logger.info("config is " + json.dumps(meta.config))
        event["properties"]["sandboxed"] = True
    return event
"""


def test_only_staff_may_create_source_plugins(project, api_client):
    body = {"name": "x", "source_type": "source", "source": {"plugin.json": MANIFEST, "plugin.py": CODE}}
    response = api_client.post("/api/plugins/", body, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert "staff" in response.json()["detail"]


def test_a_source_plugin_cannot_import_os_open_files_or_run_past_its_time_limit(
    client, project, celery_worker, install
):
    staff = api_client_for(project.organization, staff=True)
    body = {"name": "Sandboxed", "source_type": "source", "source": {"plugin.json": MANIFEST, "plugin.py": CODE}}
    response = staff.post("/api/plugins/", body, format="json")
    assert response.status_code == 201, response.content
    plugin = response.json()
    assert plugin["source_type"] == "source"
    assert plugin["capabilities"] == {"methods": ["process_event"], "jobs": [], "scheduled_tasks": []}

    configs = {}
    for order, mode in enumerate(["os", "file", "loop", "ok"]):
        response = staff.post(
            f"/api/projects/{project.id}/plugin_configs/",
            {"plugin": plugin["id"], "enabled": True, "order": order, "config": {"mode": mode}},
            format="json",
        )
        assert response.status_code == 201, response.content
        configs[mode] = response.json()["id"]

    post_batch(client, project.api_token, [event("x")])
    stored = wait_for_events(project.id, 1, timeout=60)[0]["properties"]
    assert stored["sandboxed"] is True
    assert "cwd" not in stored and "secret" not in stored
    assert sorted(stored["$plugins_failed"]) == sorted(f"Sandboxed ({configs[m]})" for m in ("os", "file", "loop"))

    def error_of(mode):
        return wait_until(
            lambda: [e["message"] for e in logs(staff, project.id, configs[mode], type="ERROR")],
            message=f"the {mode} error",
        )[0]

    assert "import of 'os' is not allowed in source plugins" in error_of("os")
    assert "source plugins cannot open files" in error_of("file")
    assert f"ran past its time limit of {WORKER_TIMEOUT_SECONDS:g} s" in error_of("loop")
    ok_logs = logs(staff, project.id, configs["ok"])
    assert {"source": "CONSOLE", "type": "INFO", "message": "processing x"}.items() <= next(
        e for e in ok_logs if e["source"] == "CONSOLE"
    ).items()
    assert any(e["source"] == "PLUGIN" and e["message"] == 'config is {"mode": "ok"}' for e in ok_logs)


def test_source_files_can_be_edited_by_staff_and_reload(client, project, celery_worker):
    staff = api_client_for(project.organization, staff=True)
    code = "def process_event(event, meta):\n    event['properties']['version'] = 1\n    return event\n"
    body = {"source_type": "source", "source": {"plugin.json": '{"name": "Versioned"}', "plugin.py": code}}
    plugin = staff.post("/api/plugins/", body, format="json").json()
    assert plugin["name"] == "Versioned"
    staff.post(f"/api/projects/{project.id}/plugin_configs/", {"plugin": plugin["id"], "enabled": True}, format="json")
    post_batch(client, project.api_token, [event("one")])
    assert wait_for_events(project.id, 1, event="one")[0]["properties"]["version"] == 1

    member = api_client_for(project.organization)
    response = member.patch(f"/api/plugins/{plugin['id']}/source/", {"plugin.py": code}, format="json")
    assert response.status_code == 403

    new_code = code.replace("= 1", "= 2") + "\ndef on_event(event, meta):\n    pass\n"
    response = staff.patch(f"/api/plugins/{plugin['id']}/source/", {"plugin.py": new_code}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["plugin.py"] == new_code
    assert staff.get(f"/api/plugins/{plugin['id']}/").json()["capabilities"]["methods"] == ["process_event", "on_event"]

    post_batch(client, project.api_token, [event("two")])
    assert wait_for_events(project.id, 1, event="two")[0]["properties"]["version"] == 2

    broken = staff.patch(f"/api/plugins/{plugin['id']}/source/", {"plugin.py": "def broken(:\n"}, format="json")
    assert broken.status_code == 400
    assert broken.json()["attr"] == "source"
    assert "does not compile" in broken.json()["detail"]
