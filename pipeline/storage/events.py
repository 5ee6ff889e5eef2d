"""Events in ClickHouse: the batched insert and the reads.

Every SQL statement the project sends to ClickHouse for events is a constant in this module and
is listed in `QUERIES`, so that a test can run each one on ClickHouse 18.16 and on a current
ClickHouse (chdb).
"""

import json
import math
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

# The events table's ORDER BY key starts (team_id, day of timestamp_ms): a page reads only the
# days it names. ClickHouse 18.16 cannot narrow the key by a condition on timestamp_ms itself
# (it prunes partitions, whole months, by it), so each read also bounds the key's day, the same
# expression, by the days of its window. `event` and `distinct_id` follow in the key: a filter
# is written only when given, because `('' = '' OR event = ...)` cannot narrow it.
KEY_DAY = "toDate(toDateTime(intDiv(timestamp_ms, 1000)))"


def _list_events_sql(*filters: str) -> str:
    filtered = "".join(f"\n  AND {condition}" for condition in filters)
    return f"""
SELECT {SELECT_COLUMNS}
FROM events
WHERE team_id = %(team_id)s
  AND {KEY_DAY} >= toDate(toDateTime(intDiv(%(key_after_ms)s, 1000)))
  AND {KEY_DAY} <= toDate(toDateTime(intDiv(%(key_last_ms)s, 1000)))
  AND timestamp_ms >= %(after_ms)s AND timestamp_ms < %(before_ms)s
  AND (timestamp_ms < %(cursor_ms)s OR (timestamp_ms = %(cursor_ms)s AND toString(uuid) < %(cursor_uuid)s)){filtered}
ORDER BY timestamp_ms DESC, toString(uuid) DESC
LIMIT %(limit)s
"""


BY_EVENT = "event = %(event)s"
BY_DISTINCT_ID = "distinct_id = %(distinct_id)s"

LIST_EVENTS = _list_events_sql()
LIST_EVENTS_BY_EVENT = _list_events_sql(BY_EVENT)
LIST_EVENTS_BY_DISTINCT_ID = _list_events_sql(BY_DISTINCT_ID)
LIST_EVENTS_BY_EVENT_AND_DISTINCT_ID = _list_events_sql(BY_EVENT, BY_DISTINCT_ID)

# By (event given, distinct_id given).
LIST_EVENTS_FILTERED = {
    (False, False): LIST_EVENTS,
    (True, False): LIST_EVENTS_BY_EVENT,
    (False, True): LIST_EVENTS_BY_DISTINCT_ID,
    (True, True): LIST_EVENTS_BY_EVENT_AND_DISTINCT_ID,
}

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
    **{
        name: (
            sql,
            {
                "team_id": 1,
                "event": "signed_up",
                "distinct_id": "user-1",
                "key_after_ms": 0,
                "key_last_ms": 1_714_539_480_123,
                "after_ms": 0,
                "before_ms": 2**62,
                "cursor_ms": 2**62,
                "cursor_uuid": "~",
                "limit": 10,
            },
        )
        for name, sql in (
            ("list_events", LIST_EVENTS),
            ("list_events_by_event", LIST_EVENTS_BY_EVENT),
            ("list_events_by_distinct_id", LIST_EVENTS_BY_DISTINCT_ID),
            ("list_events_by_event_and_distinct_id", LIST_EVENTS_BY_EVENT_AND_DISTINCT_ID),
        )
    },
    "count_events": (COUNT_EVENTS, {"team_id": 1}),
    "latest_created_at": (LATEST_CREATED_AT, {}),
}

NIL_UUID = UUID(int=0)
MAX_CURSOR_MS = 2**62
DAY_MS = 86_400_000
# The last millisecond whose day ClickHouse 18.16 knows (2105-12-31T23:59:59.999Z; later ones
# come out as 0000-00-00): a window's bound beyond it is clamped for the key's day. Ingestion
# stores no timestamp beyond tomorrow.
MAX_KEY_MS = 4_291_747_199_999
# A page that would read this many days back reads everything older at once instead.
WIDEN_UP_TO_DAYS = 100


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
    now_ms: int | None = None,
) -> list[dict]:
    """The project's events in [after_ms, before_ms) past the cursor, newest first, at most
    `limit`, read one time window at a time, newest first: the UTC day of `before_ms` or of now,
    whichever is earlier (with everything later in the range), then earlier windows only while
    the page is not full, each as long as `next_window_days` says. A first page costs about a
    day of the project's events rather than all of them.

    The windows are half-open, start at UTC midnights and follow one another, so together they
    are exactly the range: the page is the one a single query over the range would give. They
    match the key's days when the ClickHouse server's timezone is UTC (as
    support-files/dev/clickhouse-config.xml.template sets it); in any other a window reads one
    day more than it needs."""
    cursor_ms, cursor_uuid = cursor or (MAX_CURSOR_MS, "~")
    before_ms = min(before_ms, cursor_ms + 1)
    if before_ms <= after_ms:
        return []
    sql = LIST_EVENTS_FILTERED[bool(event), bool(distinct_id)]
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    newest_day = min(before_ms - 1, now_ms) // DAY_MS * DAY_MS
    start = max(newest_day, after_ms)
    rows: list[tuple] = []
    while True:
        rows += execute(
            sql,
            {
                "team_id": team_id,
                "event": event,
                "distinct_id": distinct_id,
                "key_after_ms": min(start, MAX_KEY_MS),
                "key_last_ms": min(before_ms - 1, MAX_KEY_MS),
                "after_ms": start,
                "before_ms": before_ms,
                "cursor_ms": cursor_ms,
                "cursor_uuid": cursor_uuid,
                "limit": limit - len(rows),
            },
        )
        if len(rows) >= limit or start <= after_ms:
            return [_row_to_event(row) for row in rows]
        days_read = (newest_day - start) // DAY_MS + 1
        days = next_window_days(days_read, len(rows), limit - len(rows))
        before_ms, start = start, max(after_ms, start - days * DAY_MS)


def next_window_days(days_read: int, found: int, wanted: int) -> int:
    """How many days before those read the next window reaches. With rows found, far enough for
    the rows still wanted and half as many again at the rate found so far; with none, eight
    times as far back as was read; at least twice as far back either way. A reach of
    WIDEN_UP_TO_DAYS or more takes everything older at once. So the first page of a busy project
    reads its newest day, and a rare filter's page or a quiet project's a few windows."""
    reach = 8 * days_read
    if found:
        reach = max(2 * days_read, days_read + math.ceil(1.5 * wanted * days_read / found))
    return reach - days_read if reach < WIDEN_UP_TO_DAYS else MAX_CURSOR_MS // DAY_MS


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
