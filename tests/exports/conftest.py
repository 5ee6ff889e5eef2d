"""Helpers for the export tests: events written straight to ClickHouse, export files read back,
a local plugin installed over the API for historical exports."""

import gzip
import hashlib
import random
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

BASE_MS = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp() * 1000)
START = datetime.fromtimestamp(BASE_MS / 1000, tz=UTC)


@pytest.fixture
def project(db):
    """A project with an id no other test uses (ClickHouse keeps rows across tests)."""
    from tests.factories import make_project

    return make_project(id=random.randrange(2 * 10**9, 3 * 10**9))


def store_events(project_id: int, count: int, *, start_ms: int = BASE_MS, step_ms: int = 1000, **overrides):
    """Write `count` events straight to ClickHouse (as ingestion's step 7 does); returns the rows.

    Every third event shares its timestamp with the one before, so that the (timestamp, uuid)
    order is exercised, and events alternate between two names and two plans.
    """
    from pipeline.storage.events import EventRow, insert_events

    rows = []
    for n in range(count):
        ts = start_ms + (n - n % 3 // 2) * step_ms
        fields = {
            "uuid": uuid.uuid4(),
            "team_id": project_id,
            "event": "$pageview" if n % 2 else "signed_up",
            "distinct_id": f"user-{n % 7}",
            "properties": {"n": n, "plan": "pro" if n % 4 == 0 else "free", "text": f'quote " comma , {n}'},
            "timestamp_ms": ts,
            "created_at_ms": ts + 5,
            "person_id": uuid.UUID(int=0),
            "person_properties": {},
            "elements_chain": "",
        }
        fields.update(overrides)
        rows.append(EventRow(**fields))
    insert_events(rows)
    return rows


def keyset_order(rows) -> list:
    return sorted(rows, key=lambda row: (row.timestamp_ms, str(row.uuid)))


def iso(ms: int) -> str:
    from pipeline.storage.events import ms_to_iso

    return ms_to_iso(ms)


def read_lines(path) -> list[bytes]:
    with gzip.open(path, "rb") as f:
        return f.read().splitlines()


def read_jsonl(path) -> list[dict]:
    return [orjson.loads(line) for line in read_lines(path)]


def sorted_hashes(lines: list[bytes]) -> list[str]:
    return sorted(hashlib.sha256(line).hexdigest() for line in lines)


@pytest.fixture
def install_plugin(settings, api_client, project):
    """Write a local plugin folder, create it over the API and enable it for the project;
    returns (plugin, config) as the API shows them."""

    def install(code: str, config: dict | None = None) -> tuple[dict, dict]:
        folder = f"export-test-{uuid.uuid4().hex[:10]}"
        root = Path(settings.PLUGINS_DIR) / folder
        root.mkdir(parents=True)
        (root / "plugin.json").write_bytes(orjson.dumps({"name": "Export test", "main": "plugin.py", "config": []}))
        (root / "plugin.py").write_text(textwrap.dedent(code))
        response = api_client.post("/api/plugins/", {"source_type": "local", "path": folder}, format="json")
        assert response.status_code == 201, response.content
        plugin = response.json()
        response = api_client.post(
            f"/api/projects/{project.id}/plugin_configs/",
            {"plugin": plugin["id"], "enabled": True, "config": config or {}},
            format="json",
        )
        assert response.status_code == 201, response.content
        return plugin, response.json()

    return install


def cached_list(plugin_id: int, project_id: int, key: str) -> list:
    """What a plugin pushed with meta.cache.lpush(key, [...]), oldest first."""
    from pipeline.plugins.meta import _decode, cache_key
    from pipeline.redis import get_redis

    return [_decode(v) for v in reversed(get_redis().lrange(cache_key(plugin_id, project_id, key), 0, -1))]


def wait_until(check, timeout: float = 60.0, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def make_export(project, user=None, **fields):
    """A file export row, as the API creates it (without queueing a run)."""
    from bklog_app.exports.models import ExportJob

    fields.setdefault("format", "csv")
    fields.setdefault("after", START)
    fields.setdefault("before", START + timedelta(days=1))
    return ExportJob.objects.create(project=project, requested_by=user, **fields)
