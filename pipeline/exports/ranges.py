"""Which events an export reads, how it walks them chunk by chunk, and the exact property match
behind the SQL pre-filter."""

from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.ingestion.timestamps import to_ms
from pipeline.storage.exports import EventRange


def event_range_for(job) -> EventRange:
    """The range of a file export (names and properties) or a historical export (everything)."""
    return EventRange(
        team_id=job.project_id,
        after_ms=to_ms(job.after),
        before_ms=to_ms(job.before),
        events=tuple(getattr(job, "events", None) or ()),
        properties=dict(getattr(job, "properties", None) or {}),
    )


def properties_match(properties_json: str, wanted: dict[str, Any]) -> bool:
    """Every wanted key is present with an equal value (JSON equality: 1 == 1.0, "1" != 1)."""
    if not wanted:
        return True
    try:
        properties = orjson.loads(properties_json or "{}")
    except orjson.JSONDecodeError:
        return False
    if not isinstance(properties, dict):
        return False
    return all(key in properties and _equal(properties[key], value) for key, value in wanted.items())


def _equal(stored: Any, wanted: Any) -> bool:
    # True == 1 in Python, but not in JSON.
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return type(stored) is type(wanted) and stored == wanted
    return stored == wanted


Cursor = tuple[int, str]


@dataclass
class Walk:
    """Walks a range in (timestamp_ms, uuid) order in chunks of at most `limit` rows, each read
    from the cursor up to a time bound a little ahead of it, not up to the range's end: ClickHouse
    then reads only the days the bound spans, instead of everything left of the range, every
    chunk. The bound's span starts from the estimated density and widens while chunks come back
    less than half full; a chunk that comes back full ends at its last row, as without a bound.

    A cursor (ms, uuid) means: every row up to it is done. (ms, "") after a bound that was read to
    the end means: every row before ms is done (no uuid is empty). Either way a resumed export that
    starts from a committed cursor reads exactly the rows an uninterrupted one would have.
    """

    event_range: EventRange
    limit: int
    span_ms: int

    @classmethod
    def over(cls, event_range: EventRange, limit: int, estimated_rows: int | None) -> "Walk":
        length = max(event_range.before_ms - event_range.after_ms, 1)
        span = length if not estimated_rows else length * limit // estimated_rows
        return cls(event_range, limit, max(span, 1))

    def bound(self, cursor: Cursor | None) -> int:
        start = cursor[0] if cursor is not None else self.event_range.after_ms
        return min(self.event_range.before_ms, start + self.span_ms)

    def after_chunk(self, cursor: Cursor | None, bound: int, scanned: int, last: Cursor | None) -> Cursor | None:
        """The cursor after a chunk read up to `bound`; None when the range is done."""
        if scanned >= self.limit and last is not None:
            return last
        if bound >= self.event_range.before_ms:
            return None
        # Too few rows for the span: widen it by what the density suggests, at most 16 times.
        factor = 16 if scanned == 0 else min(16, self.limit // scanned)
        if factor >= 2:
            self.span_ms *= factor
        return (bound, "")
