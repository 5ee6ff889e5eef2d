"""Capture -> Redis -> real Celery worker -> ClickHouse, end to end."""

import uuid

import orjson
import pytest

from tests.factories import wait_for_events

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def post_batch(client, token, events, **extra):
    body = {"api_key": token, "batch": events, **extra}
    return client.post("/batch/", data=orjson.dumps(body), content_type="application/json")


def test_batch_is_stored_with_uuids_and_milliseconds(client, project, celery_worker):
    events = [
        {
            "event": "signed_up",
            "distinct_id": f"user-{i}",
            "uuid": str(uuid.uuid4()),
            "timestamp": f"2024-03-01T10:00:00.{i:03d}Z",
            "properties": {"plan": "pro", "i": i},
        }
        for i in range(1, 6)
    ]
    response = post_batch(client, project.api_token, events)
    assert response.status_code == 200, response.content
    assert response.json() == {"status": 1}

    stored = wait_for_events(project.id, 5)
    assert sorted(e["uuid"] for e in stored) == sorted(e["uuid"] for e in events)
    by_uuid = {e["uuid"]: e for e in stored}
    for sent in events:
        row = by_uuid[sent["uuid"]]
        assert row["timestamp"] == sent["timestamp"]
        assert row["properties"]["plan"] == "pro"
        assert row["distinct_id"] == sent["distinct_id"]
        assert row["person_id"] is None
