"""Events read for exports: a count for the estimate, and chunks in (timestamp_ms, uuid) order.

Every statement is a constant listed in `QUERIES`, so that a test runs each one on ClickHouse
18.16 and on a current ClickHouse (chdb). Chunks are keyset-paginated: a chunk is "the next
`limit` events after this (timestamp_ms, uuid)", so a resumed export that starts from the last
committed chunk's cursor reads exactly the rows an uninterrupted one would have read next.
uuids are compared as strings (18.16 cannot compare a UUID column with a string literal), and
`LIMIT 1 BY` drops the copies ReplacingMergeTree keeps until its next merge.

The property filter is applied here as a substring pre-filter (`"key":value` in the stored JSON,
as ingestion writes it); `ExportFilter.matches` in pipeline/exports/ makes it exact.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.storage.clickhouse import OUTAGE_ERRORS, ClickHouseUnavailable, execute, get_client
from pipeline.storage.events import SELECT_COLUMNS

# Read first (PREWHERE), from the light columns: the project and the time range. The range is
# also given on the table key's own date expression, which lets ClickHouse skip every day outside
# it (18.16 does not derive that from a condition on timestamp_ms alone); then the other columns
# are read only for the granules that hold rows of the range.
_PREWHERE = """
    team_id = %(team_id)s
  AND toDate(toDateTime(intDiv(timestamp_ms, 1000))) >= toDate(toDateTime(intDiv(%(after_ms)s, 1000)))
  AND toDate(toDateTime(intDiv(timestamp_ms, 1000))) <= toDate(toDateTime(intDiv(%(before_ms)s, 1000)))
  AND timestamp_ms >= %(after_ms)s AND timestamp_ms < %(before_ms)s
"""

# Names and the properties pre-filter. %(all_events)s = 1 when no names are given (an empty
# IN () is not valid SQL); %(needles)s is [''] when no property is given (18.16 cannot type an
# empty array literal). 18.16 reads only the columns named outside lambdas, hence
# `properties != ''` (always true: ingestion stores at least '{}').
_WHERE = """
    (%(all_events)s = 1 OR event IN %(events)s)
  AND properties != ''
  AND arrayAll(needle -> position(properties, needle) > 0, %(needles)s)
"""

COUNT_EXPORT_ROWS = f"""
SELECT count() FROM events
PREWHERE {_PREWHERE}
WHERE {_WHERE}
"""

SELECT_EXPORT_CHUNK = f"""
SELECT {SELECT_COLUMNS}
FROM events
PREWHERE {_PREWHERE}
WHERE {_WHERE}
  AND (timestamp_ms > %(cursor_ms)s OR (timestamp_ms = %(cursor_ms)s AND toString(uuid) > %(cursor_uuid)s))
ORDER BY timestamp_ms, toString(uuid)
LIMIT 1 BY timestamp_ms, uuid
LIMIT %(limit)s
"""

_EXAMPLE_FILTER = {
    "team_id": 1,
    "after_ms": 0,
    "before_ms": 2**62,
    "all_events": 0,
    "events": ("$pageview", "signed_up"),
    "needles": ['"plan":"pro"'],
}

QUERIES: dict[str, tuple[str, dict[str, Any]]] = {
    "count_export_rows": (COUNT_EXPORT_ROWS, _EXAMPLE_FILTER),
    "select_export_chunk": (
        SELECT_EXPORT_CHUNK,
        {**_EXAMPLE_FILTER, "cursor_ms": 0, "cursor_uuid": "", "limit": 10},
    ),
    "select_export_chunk_unfiltered": (
        SELECT_EXPORT_CHUNK,
        {
            **_EXAMPLE_FILTER,
            "all_events": 1,
            "events": ("",),
            "needles": [""],
            "cursor_ms": 0,
            "cursor_uuid": "",
            "limit": 10,
        },
    ),
}

# Rows arrive in blocks of at most this many: the reader's memory does not depend on the chunk.
STREAM_BLOCK_ROWS = 2_000


@dataclass(frozen=True)
class EventRange:
    """Which stored events an export reads: one project, [after_ms, before_ms), names, properties."""

    team_id: int
    after_ms: int
    before_ms: int
    events: Sequence[str] = ()
    properties: dict[str, Any] = field(default_factory=dict)

    def params(self) -> dict[str, Any]:
        return {
            "team_id": self.team_id,
            "after_ms": self.after_ms,
            "before_ms": self.before_ms,
            "all_events": 0 if self.events else 1,
            "events": tuple(self.events) or ("",),
            "needles": [property_needle(k, v) for k, v in sorted(self.properties.items())] or [""],
        }


def property_needle(key: str, value: Any) -> str:
    """`"key":value` as ingestion's compact JSON writes it (pipeline.storage.events.to_json)."""
    return f"{orjson.dumps(key).decode()}:{orjson.dumps(value).decode()}"


def count_rows(event_range: EventRange) -> int:
    """Rows the range holds (before exact property matching and merging of copies): an estimate."""
    return execute(COUNT_EXPORT_ROWS, event_range.params())[0][0]


def chunk_params(
    event_range: EventRange, cursor: tuple[int, str] | None, limit: int, until_ms: int | None = None
) -> dict[str, Any]:
    cursor_ms, cursor_uuid = cursor if cursor is not None else (event_range.after_ms, "")
    params = {**event_range.params(), "cursor_ms": cursor_ms, "cursor_uuid": cursor_uuid, "limit": limit}
    params["after_ms"] = max(event_range.after_ms, cursor_ms)  # nothing before the cursor is read
    if until_ms is not None:
        params["before_ms"] = min(until_ms, event_range.before_ms)
    return params


def fetch_chunk(
    event_range: EventRange, cursor: tuple[int, str] | None, limit: int, until_ms: int | None = None
) -> list[tuple]:
    """The next `limit` rows after `cursor` (None: from the start) and before `until_ms` (None:
    the range's end), as a list. A bound close to the cursor keeps the read short: ClickHouse
    then skips every day of the range outside it (the table's key has the event's date)."""
    return execute(SELECT_EXPORT_CHUNK, chunk_params(event_range, cursor, limit, until_ms))


def stream_chunk(
    event_range: EventRange, cursor: tuple[int, str] | None, limit: int, until_ms: int | None = None
) -> Iterator[tuple]:
    """The same rows as `fetch_chunk`, streamed block by block so that memory stays flat.

    Rows are tuples: uuid, event, distinct_id, properties, timestamp_ms, created_at_ms, person_id,
    person_properties, elements_chain (pipeline.storage.events.SELECT_COLUMNS). A reader that stops
    early drops the connection, since the rest of the answer would still be on its way.
    """
    client = get_client()
    finished = False
    try:
        yield from client.execute_iter(
            SELECT_EXPORT_CHUNK,
            chunk_params(event_range, cursor, limit, until_ms),
            settings={"max_block_size": STREAM_BLOCK_ROWS},
        )
        finished = True
    except OUTAGE_ERRORS as exc:
        raise ClickHouseUnavailable(f"ClickHouse became unavailable while an export read events: {exc}") from exc
    finally:
        if not finished:
            client.disconnect()
