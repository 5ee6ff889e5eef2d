"""Events in ClickHouse: the batched insert and the reads.

Every SQL statement the project sends to ClickHouse for events is a constant in this module and
is listed in `QUERIES`, so that a test can run each one on ClickHouse 18.16 and on a current
ClickHouse (chdb).
"""

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson

from pipeline.metrics import observe_clickhouse_insert
from pipeline.storage.clickhouse import execute

EVENT_COLUMNS = (
    "uuid",
    "team_id",
    "event",
    "distinct_id",
    "properties",
    "timestamp_ms",
    "created_at_ms",
    "person_id",
    "person_properties",
    "elements_chain",
)

INSERT_EVENTS = f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES"

# Compared as strings: ClickHouse 18.16 cannot compare a UUID column with string literals.
EXISTING_UUIDS = """
SELECT DISTINCT toString(uuid) FROM events
WHERE team_id IN %(team_ids)s AND toString(uuid) IN %(uuids)s
"""

SELECT_COLUMNS = (
    "toString(uuid), event, distinct_id, properties, timestamp_ms, created_at_ms, "
    "toString(person_id), person_properties, elements_chain"
)

LIST_EVENTS = f"""
SELECT {SELECT_COLUMNS}
FROM events
WHERE team_id = %(team_id)s
  AND (%(event)s = '' OR event = %(event)s)
  AND (%(distinct_id)s = '' OR distinct_id = %(distinct_id)s)
  AND timestamp_ms >= %(after_ms)s AND timestamp_ms < %(before_ms)s
  AND (timestamp_ms < %(cursor_ms)s OR (timestamp_ms = %(cursor_ms)s AND toString(uuid) < %(cursor_uuid)s))
ORDER BY timestamp_ms DESC, toString(uuid) DESC
LIMIT %(limit)s
"""

COUNT_EVENTS = """
SELECT count() FROM events WHERE team_id = %(team_id)s
"""

LATEST_CREATED_AT = """
SELECT max(created_at_ms) FROM events
"""

QUERIES: dict[str, tuple[str, dict[str, Any]]] = {
    "existing_uuids": (
        EXISTING_UUIDS,
        {"team_ids": (1,), "uuids": ("00000000-0000-0000-0000-000000000001",)},
    ),
    "list_events": (
        LIST_EVENTS,
        {
            "team_id": 1,
            "event": "",
            "distinct_id": "",
            "after_ms": 0,
            "before_ms": 2**62,
            "cursor_ms": 2**62,
            "cursor_uuid": "",
            "limit": 10,
        },
    ),
    "count_events": (COUNT_EVENTS, {"team_id": 1}),
    "latest_created_at": (LATEST_CREATED_AT, {}),
}

NIL_UUID = UUID(int=0)
MAX_CURSOR_MS = 2**62


@dataclass(frozen=True)
class EventRow:
    """One event as stored: what ingestion step 7 writes."""

    uuid: UUID
    team_id: int
    event: str
    distinct_id: str
    properties: dict
    timestamp_ms: int
    created_at_ms: int
    person_id: UUID
    person_properties: dict
    elements_chain: str


def insert_events(rows: Sequence[EventRow]) -> None:
    """Write the rows in one INSERT; returns only once ClickHouse has accepted all of them."""
    if not rows:
        return
    columns = [
        [row.uuid for row in rows],
        [row.team_id for row in rows],
        [row.event for row in rows],
        [row.distinct_id for row in rows],
        [to_json(row.properties) for row in rows],
        [row.timestamp_ms for row in rows],
        [row.created_at_ms for row in rows],
        [row.person_id for row in rows],
        [to_json(row.person_properties) for row in rows],
        [row.elements_chain for row in rows],
    ]
    started = time.perf_counter()
    execute(INSERT_EVENTS, columns, columnar=True)
    observe_clickhouse_insert(len(rows), time.perf_counter() - started)


def to_json(value: dict) -> str:
    """JSON text for a properties column. orjson is fast but refuses integers beyond 64 bits,
    which JavaScript SDKs can send; the standard library writes those as they came."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, default=str, ensure_ascii=False)


def existing_uuids(team_ids: Iterable[int], uuids: Iterable[str]) -> set[str]:
    uuids = [str(UUID(u)) for u in uuids]
    if not uuids:
        return set()
    # Tuples: clickhouse-driver renders a tuple as (a, b) for IN, a list as an array.
    rows = execute(EXISTING_UUIDS, {"team_ids": tuple(sorted(set(team_ids))), "uuids": tuple(uuids)})
    return {row[0] for row in rows}


def list_events(
    team_id: int,
    *,
    event: str = "",
    distinct_id: str = "",
    after_ms: int = 0,
    before_ms: int = MAX_CURSOR_MS,
    cursor: tuple[int, str] | None = None,
    limit: int = 100,
) -> list[dict]:
    cursor_ms, cursor_uuid = cursor or (MAX_CURSOR_MS, "~")
    rows = execute(
        LIST_EVENTS,
        {
            "team_id": team_id,
            "event": event,
            "distinct_id": distinct_id,
            "after_ms": after_ms,
            "before_ms": before_ms,
            "cursor_ms": cursor_ms,
            "cursor_uuid": cursor_uuid,
            "limit": limit,
        },
    )
    return [_row_to_event(row) for row in rows]


def count_events(team_id: int) -> int:
    return execute(COUNT_EVENTS, {"team_id": team_id})[0][0]


def iter_rows_as_events(rows: Iterable[tuple]) -> Iterator[dict]:
    return (_row_to_event(row) for row in rows)


def ms_to_iso(ms: int) -> str:
    """ISO 8601 in UTC with milliseconds, as the API shows timestamps: 2024-01-01T04:58:00.000Z."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _row_to_event(row: tuple) -> dict:
    uuid, event, distinct_id, properties, timestamp_ms, created_at_ms, person_id, person_properties, elements_chain = (
        row
    )
    return {
        "uuid": uuid,
        "event": event,
        "distinct_id": distinct_id,
        "properties": orjson.loads(properties) if properties else {},
        "timestamp": ms_to_iso(timestamp_ms),
        "timestamp_ms": timestamp_ms,
        "created_at": ms_to_iso(created_at_ms),
        "person_id": None if person_id == str(NIL_UUID) else person_id,
        "person_properties": orjson.loads(person_properties) if person_properties else {},
        "elements_chain": elements_chain,
    }
