"""Helpers for the plugin tests: local plugin folders, API calls, waiting on what workers do.

The root conftest shortens the plugin retry schedules and time limit for every process of the
session (PLUGIN_RETRY_DELAY_SCALE, PLUGIN_TIMEOUT_SECONDS).
"""

import os
import textwrap
import time
import uuid
from pathlib import Path

import orjson
import pytest

WORKER_TIMEOUT_SECONDS = float(os.environ.get("PLUGIN_TIMEOUT_SECONDS", "2"))  # as tests/conftest.py sets it


def wait_until(check, timeout: float = 30.0, interval: float = 0.1, message: str = "condition"):
    """Poll `check()` until it returns something truthy; fail with `message` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def post_batch(client, token: str, events: list[dict]):
    body = {"api_key": token, "batch": events}
    response = client.post("/batch/", data=orjson.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.content
    return response


def event(name: str = "signed_up", distinct_id: str = "user-1", **properties) -> dict:
    return {"event": name, "distinct_id": distinct_id, "uuid": str(uuid.uuid4()), "properties": properties}


@pytest.fixture
def local_plugin(settings):
    """Write a plugin folder under PLUGINS_DIR; returns its path relative to PLUGINS_DIR."""
    root = Path(settings.PLUGINS_DIR)

    def write(code: str, config: list | None = None, name: str = "Test plugin") -> str:
        folder = f"test-{uuid.uuid4().hex[:10]}"
        (root / folder).mkdir(parents=True)
        manifest = {"name": name, "main": "plugin.py", "config": config or []}
        (root / folder / "plugin.json").write_bytes(orjson.dumps(manifest))
        (root / folder / "plugin.py").write_text(textwrap.dedent(code))
        return folder

    return write


@pytest.fixture
def install(api_client, project):
    """Create a plugin over the API and enable it for the project; returns (plugin, config) JSON."""

    def install(plugin_body: dict, config: dict | None = None, order: int = 0, client=None) -> tuple[dict, dict]:
        client = client or api_client
        response = client.post("/api/plugins/", plugin_body, format="json")
        assert response.status_code == 201, response.content
        plugin = response.json()
        response = client.post(
            f"/api/projects/{project.id}/plugin_configs/",
            {"plugin": plugin["id"], "enabled": True, "order": order, "config": config or {}},
            format="json",
        )
        assert response.status_code == 201, response.content
        return plugin, response.json()

    return install


@pytest.fixture
def local_plugin_config(api_client, project, local_plugin):
    """A local plugin with this code, and a config of it in the project (not enabled)."""
    from bklog_app.plugins.models import PluginConfig

    def make(code, config=None, schema=None):
        path = local_plugin(code, config=schema)
        response = api_client.post("/api/plugins/", {"source_type": "local", "path": path}, format="json")
        assert response.status_code == 201, response.content
        return PluginConfig.objects.create(project=project, plugin_id=response.json()["id"], config=config or {})

    return make


def cache_values(plugin_id: int, project_id: int, key: str) -> list:
    """What a plugin pushed with meta.cache.lpush(key, ...), oldest first."""
    from pipeline.plugins.meta import _decode, cache_key
    from pipeline.redis import get_redis

    return [_decode(v) for v in reversed(get_redis().lrange(cache_key(plugin_id, project_id, key), 0, -1))]


def logs(api_client, project_id: int, config_id: int, **params) -> list[dict]:
    response = api_client.get(f"/api/projects/{project_id}/plugin_configs/{config_id}/logs/", params)
    assert response.status_code == 200, response.content
    return response.json()["results"]
