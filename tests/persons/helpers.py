"""Events as ingestion step 6 receives them, and a way to run step 6 and keep its warnings."""

import uuid

import orjson

from pipeline.persons.resolve import resolve_persons

BASE_MS = 1_709_287_200_000  # 2024-03-01T10:00:00Z


def normalised(name: str, distinct_id: str, offset_ms: int = 0, **properties) -> dict:
    return {
        "uuid": str(uuid.uuid4()),
        "event": name,
        "distinct_id": distinct_id,
        "properties": properties,
        "timestamp_ms": BASE_MS + offset_ms,
        "elements_chain": "",
    }


def resolve(project_id: int, events: list[dict]) -> tuple[list, list[tuple]]:
    warnings: list[tuple] = []
    results = resolve_persons(project_id, events, lambda *warning: warnings.append(warning))
    return results, warnings


def captured(name: str, distinct_id: str, **fields) -> dict:
    """An event as an SDK sends it to /batch/."""
    return {"event": name, "distinct_id": distinct_id, "uuid": str(uuid.uuid4()), **fields}


def post_batch(client, token: str, events: list[dict]):
    response = client.post(
        "/batch/", data=orjson.dumps({"api_key": token, "batch": events}), content_type="application/json"
    )
    assert response.status_code == 200, response.content
    return response


def api_events(api_client, project_id: int, count: int, timeout: float = 30.0) -> list[dict]:
    """Poll the events API until at least `count` events are listed; oldest first."""
    import time

    deadline = time.monotonic() + timeout
    events: list[dict] = []
    while time.monotonic() < deadline:
        response = api_client.get(f"/api/projects/{project_id}/events/", {"limit": 1000})
        assert response.status_code == 200, response.content
        events = response.json()["results"]
        if len(events) >= count:
            break
        time.sleep(0.1)
    return list(reversed(events))


def at(second: int) -> str:
    return f"2024-03-01T10:00:{second:02d}.000Z"
