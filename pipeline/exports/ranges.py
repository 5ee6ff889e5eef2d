"""Which events an export reads, and the exact property match behind the SQL pre-filter."""

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
