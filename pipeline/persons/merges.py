"""Which events merge two distinct ids, and when a merge is refused (docs/contracts.md#persons).

`$identify` merges `properties.$anon_distinct_id`, `$create_alias` and `$merge_dangerously`
merge `properties.alias`, each into the event's own `distinct_id`. Only `$merge_dangerously`
may merge away a person that is already identified.
"""

from dataclasses import dataclass
from typing import Any

from pipeline.persons.illegal_ids import is_illegal_distinct_id

CANNOT_MERGE_ALREADY_IDENTIFIED = "cannot_merge_already_identified"
CANNOT_MERGE_WITH_ILLEGAL_DISTINCT_ID = "cannot_merge_with_illegal_distinct_id"

# Same cut as ingestion applies to an event's distinct_id, so an alias names the id it was stored as.
MAX_DISTINCT_ID_LENGTH = 200

# event name -> (property holding the other distinct id, may merge an identified person)
MERGE_EVENTS: dict[str, tuple[str, bool]] = {
    "$identify": ("$anon_distinct_id", False),
    "$create_alias": ("alias", False),
    "$merge_dangerously": ("alias", True),
}


@dataclass(frozen=True)
class MergeRequest:
    """Merge `other` into `into` (the event's distinct id). `other` is None when the property
    held something that cannot be a distinct id (an object, a list): such a merge is illegal."""

    event: str
    into: str
    other: str | None
    raw_other: Any
    allow_identified: bool

    @property
    def illegal_id(self) -> str | None:
        """The id that makes this merge illegal, if any."""
        if self.other is None:
            return str(self.raw_other)[:MAX_DISTINCT_ID_LENGTH]
        for distinct_id in (self.other, self.into):
            if is_illegal_distinct_id(distinct_id):
                return distinct_id
        return None

    def warning_details(self) -> dict:
        return {"event": self.event, "distinct_id": self.into, "other_distinct_id": self.other or str(self.raw_other)}


def merge_request(event: dict) -> MergeRequest | None:
    """The merge this event asks for, or None (not a merge event, no other id, or the same id)."""
    spec = MERGE_EVENTS.get(event.get("event"))
    if spec is None:
        return None
    key, allow_identified = spec
    raw = (event.get("properties") or {}).get(key)
    if raw is None:
        return None
    other = as_distinct_id(raw)
    if other == event["distinct_id"]:
        return None
    return MergeRequest(event["event"], event["distinct_id"], other, raw, allow_identified)


def as_distinct_id(value: Any) -> str | None:
    """A distinct id as SDKs would have written it: JavaScript's String() for scalars."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str | int | float):
        return str(value)[:MAX_DISTINCT_ID_LENGTH]
    return None


def other_distinct_id(event: dict) -> str | None:
    """The id this event would merge in, whether or not the merge is allowed."""
    request = merge_request(event)
    return request.other if request is not None else None
