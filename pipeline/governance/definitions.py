"""Event and property definitions, kept up from what each batch stored (docs/governance.md#definitions).

Never a write per event. Each process remembers which (project, event) names and which of their
property keys it has already recorded, so a batch of known events costs a set union per event
and no query. What is new to the process is written with one `bulk_create(ignore_conflicts)`
per table (another process may have written it first: harmless). Last-seen times are written
at most once per GOVERNANCE_LAST_SEEN_SECONDS per process, one UPDATE per project. Volumes are
per-day Redis hashes (`<prefix>:<project>:<YYYYMMDD>`: event name -> count), incremented once per
batch per name in one pipeline, kept VOLUME_DAYS + 1 days; the 30-day volume adds 30 of them.

What a process remembers stays small with many projects: the names recorded for a project, or
for one of its events, are one frozenset, and equal frozensets (projects sending one SDK's
properties) are one object. Past CACHE_LIMIT entries the oldest are forgotten
(pipeline/bounded.py); a forgotten name costs one `bulk_create` that finds it written.

A property's type is inferred from the first value ingestion sees that is not null, and kept
(as PostHog does): String, Numeric, Boolean, DateTime (an ISO 8601 date or date-time string),
Object or Array.
"""

import re
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.utils import timezone
from redis.client import Pipeline

from bklog_app.governance.models import EventDefinition, EventProperty, PropertyDefinition, PropertyType
from pipeline import bounded
from pipeline.redis import get_redis
from pipeline.storage.events import EventRow

VOLUME_KEY = "bklog:governance:volume"
VOLUME_DAYS = 30
CACHE_LIMIT = 50_000  # (project, event) pairs, and projects, per process
CHUNK = 500
MAX_NAME_LENGTH = 400  # longer names (and names with NUL, which PostgreSQL refuses) get no definition
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?\Z")

_known: dict[tuple[int, str], frozenset[str]] = {}  # (project, event) -> property keys recorded for it
_known_properties: dict[int, frozenset[str]] = {}  # project -> property names with a definition
_shared: dict[frozenset[str], frozenset[str]] = {}  # one object for each distinct set of names
_pending_seen: dict[int, tuple[set[str], set[str]]] = {}  # project -> (event names, property keys)
_last_seen_written = [time.monotonic()]


def infer_type(value) -> str | None:
    if isinstance(value, bool):
        return PropertyType.BOOLEAN
    if isinstance(value, int | float):
        return PropertyType.NUMERIC
    if isinstance(value, str):
        return PropertyType.DATETIME if _DATETIME.match(value) else PropertyType.STRING
    if isinstance(value, dict):
        return PropertyType.OBJECT
    if isinstance(value, list):
        return PropertyType.ARRAY
    return None


def note_stored(rows: list[EventRow], pipe: Pipeline) -> None:
    """Record the names, property keys, types and volumes of a batch's stored events; the
    volumes are added to `pipe` (the batch's Redis writes after its INSERT)."""
    if not rows:
        return
    seen: dict[tuple[int, str], set[str]] = {}
    volume: Counter[tuple[int, str]] = Counter()
    for row in rows:
        key = (row.team_id, row.event)
        keys = seen.get(key)
        if keys is None:
            keys = seen[key] = set()
        keys.update(row.properties)
        volume[key] += 1
    _count_volume(volume, pipe)
    _record_new(seen, rows)
    for (project_id, event), keys in seen.items():
        events, properties = _pending_seen.setdefault(project_id, (set(), set()))
        events.add(event)
        properties |= keys
    if time.monotonic() - _last_seen_written[0] >= settings.GOVERNANCE_LAST_SEEN_SECONDS:
        write_last_seen()


def write_last_seen() -> None:
    """Write the last-seen time of every name this process saw since it last did."""
    now = timezone.now()
    pending = dict(_pending_seen)
    _pending_seen.clear()
    _last_seen_written[0] = time.monotonic()
    for project_id, (events, properties) in pending.items():
        events, properties = set(filter(_recordable, events)), set(filter(_recordable, properties))
        for names in _chunks(sorted(events)):
            EventDefinition.objects.filter(project_id=project_id, name__in=names).update(last_seen_at=now)
        for names in _chunks(sorted(properties)):
            PropertyDefinition.objects.filter(project_id=project_id, name__in=names).update(last_seen_at=now)


def volumes(project_id: int, names: list[str], today: datetime | None = None) -> dict[str, int]:
    """Events stored per name over the last VOLUME_DAYS days, today included."""
    if not names:
        return {}
    today = today or datetime.now(UTC)
    pipe = get_redis().pipeline(transaction=False)
    for days_ago in range(VOLUME_DAYS):
        pipe.hmget(_volume_key(project_id, today - timedelta(days=days_ago)), names)
    totals = dict.fromkeys(names, 0)
    for counts in pipe.execute():
        for name, count in zip(names, counts, strict=True):
            if count is not None:
                totals[name] += int(count)
    return totals


def _count_volume(volume: Counter, pipe: Pipeline) -> None:
    now = datetime.now(UTC)
    for project_id in {project_id for project_id, _ in volume}:
        key = _volume_key(project_id, now)
        for (for_project, event), count in volume.items():
            if for_project == project_id:
                pipe.hincrby(key, event, count)
        pipe.expire(key, (VOLUME_DAYS + 1) * 86_400)


def _volume_key(project_id: int, day: datetime) -> str:
    return f"{VOLUME_KEY}:{project_id}:{day:%Y%m%d}"


def _record_new(seen: dict[tuple[int, str], set[str]], rows: list[EventRow]) -> None:
    new_events = [key for key in seen if key not in _known and _recordable(key[1])]
    new_pairs = {key: keys - _known.get(key, _NONE) for key, keys in seen.items()}
    new_pairs = {key: keys for key, keys in new_pairs.items() if keys}
    if not new_events and not new_pairs:
        return
    untyped = {
        (p, name)
        for (p, _), keys in new_pairs.items()
        for name in keys
        if name not in _known_properties.get(p, _NONE) and _recordable(name)
    }
    types = _types_of(untyped, rows)

    def typed(project_id: int, name: str) -> bool:
        return (project_id, name) in types or name in _known_properties.get(project_id, _NONE)

    now = timezone.now()
    EventDefinition.objects.bulk_create(
        [EventDefinition(project_id=p, name=name, created_at=now, last_seen_at=now) for p, name in new_events],
        batch_size=CHUNK,
        ignore_conflicts=True,
    )
    PropertyDefinition.objects.bulk_create(
        [
            PropertyDefinition(project_id=p, name=name, property_type=types[p, name], created_at=now, last_seen_at=now)
            for p, name in types
        ],
        batch_size=CHUNK,
        ignore_conflicts=True,
    )
    EventProperty.objects.bulk_create(
        [
            EventProperty(project_id=p, event=event, property=name)
            for (p, event), keys in new_pairs.items()
            if _recordable(event)
            for name in keys
            if typed(p, name)
        ],
        batch_size=CHUNK,
        ignore_conflicts=True,
    )
    for key in new_events:
        _remember(_known, key, _NONE)
    for (project_id, event), keys in new_pairs.items():
        _remember(_known, (project_id, event), {name for name in keys if typed(project_id, name)})
    by_project: dict[int, set[str]] = {}
    for project_id, name in types:
        by_project.setdefault(project_id, set()).add(name)
    for project_id, names in by_project.items():
        _remember(_known_properties, project_id, names)
    bounded.trim(_known, CACHE_LIMIT)
    bounded.trim(_known_properties, CACHE_LIMIT)


_NONE: frozenset[str] = frozenset()


def _remember(cache: dict, key, names) -> None:
    """Add `names` to what `cache` holds for `key`, as the shared frozenset of the union (the
    entry re-inserted: the newest, the last to be trimmed)."""
    union = cache.pop(key, _NONE) | names
    shared = _shared.get(union)
    if shared is None:
        if len(_shared) > CACHE_LIMIT:
            _shared.clear()  # only sharing is lost: the entries keep their sets
        shared = _shared[union] = union
    cache[key] = shared


def _recordable(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and "\x00" not in name


def _types_of(wanted: set[tuple[int, str]], rows: list[EventRow]) -> dict[tuple[int, str], str]:
    """The inferred type of each wanted (project, key), from its first value that is not null;
    keys seen only with null values are left out (recorded once a value comes)."""
    types: dict[tuple[int, str], str] = {}
    left = set(wanted)
    for row in rows:
        if not left:
            break
        for name, value in row.properties.items():
            key = (row.team_id, name)
            if key in left:
                inferred = infer_type(value)
                if inferred is not None:
                    types[key] = inferred
                    left.discard(key)
    return types


def _chunks(names: list[str]):
    for start in range(0, len(names), CHUNK):
        yield names[start : start + CHUNK]
