"""Events as ingestion step 6 receives them, a way to run step 6 and keep its warnings, and a
statement that waits on another transaction's lock."""

import threading
import uuid

import orjson
import psycopg

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


class Blocked:
    """A statement run on a connection of its own, in a thread, while the test's own transaction
    holds a lock it needs: `waits()` says whether it is still waiting, `outcome()` what it ended
    with once the test's transaction has ended (None, or the exception it raised)."""

    def __init__(self, url: str, sql: str, params: list) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(url, sql, params))
        self._thread.start()

    def _run(self, url: str, sql: str, params: list) -> None:
        try:
            with psycopg.connect(url, autocommit=True) as connection:
                connection.execute(sql, params)
        except BaseException as exc:
            self._error = exc

    def waits(self) -> bool:
        self._thread.join(timeout=1)
        return self._thread.is_alive()

    def outcome(self) -> BaseException | None:
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the statement still waits after the lock's transaction ended"
        return self._error
