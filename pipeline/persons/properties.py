"""How an event changes a person's properties: `$set`, `$set_once`, `$unset` (docs/contracts.md#persons).

Every function returns a new dict and never mutates its input: the dict an event was stamped
with (its `person_properties` snapshot) must not change when a later event updates the person.
"""

from dataclasses import dataclass
from typing import Any

# PostgreSQL's jsonb cannot hold U+0000; it is replaced so one odd string cannot block a person.
_NUL = "\x00"
_REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class PropertyUpdates:
    set: dict[str, Any]
    set_once: dict[str, Any]
    unset: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.set or self.set_once or self.unset)


NO_UPDATES = PropertyUpdates(set={}, set_once={}, unset=())


def updates_from(properties: dict) -> PropertyUpdates:
    """The person updates an event carries (top-level `$set`/`$set_once` are already merged in).

    Anything that is not of the expected shape is ignored: a `$set` that is not an object, an
    `$unset` that is neither a list of keys nor an object (whose keys are then unset).
    """
    set_ = properties.get("$set")
    set_once = properties.get("$set_once")
    unset = properties.get("$unset")
    if set_ is None and set_once is None and unset is None:  # most events: no object to build
        return NO_UPDATES
    if isinstance(unset, dict):
        unset = list(unset)
    return PropertyUpdates(
        set=sanitize(set_) if isinstance(set_, dict) else {},
        set_once=sanitize(set_once) if isinstance(set_once, dict) else {},
        unset=tuple(str(key) for key in unset if isinstance(key, str | int)) if isinstance(unset, list) else (),
    )


def initial_properties(updates: PropertyUpdates) -> dict:
    """A new person's properties: `{**$set_once, **$set}`, minus `$unset`."""
    return apply_updates({}, updates)


def apply_updates(current: dict, updates: PropertyUpdates) -> dict:
    """`$set_once` fills missing keys, `$set` overwrites, `$unset` removes. Returns `current`
    itself when nothing changes, so callers can tell a no-op by identity."""
    if updates.empty:
        return current
    result = dict(current)
    for key, value in updates.set_once.items():
        result.setdefault(key, value)
    result.update(updates.set)
    for key in updates.unset:
        result.pop(key, None)
    return current if result == current else result


def merged_properties(other: dict, into: dict) -> dict:
    """Properties of two merged persons: the surviving (`into`) person's values win."""
    return {**other, **into}


def sanitize(value: Any) -> Any:
    """The value with NUL characters replaced in every string, keys included."""
    if isinstance(value, str):
        return value.replace(_NUL, _REPLACEMENT) if _NUL in value else value
    if isinstance(value, dict):
        return {sanitize(str(key)): sanitize(item) for key, item in value.items()}
    if isinstance(value, list):
        return [sanitize(item) for item in value]
    return value
