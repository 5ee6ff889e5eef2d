"""Person overrides: which person an event's stored `person_id` is now.

ClickHouse keeps the person an event was stamped with at ingestion (with its properties
snapshot). When that person is later merged into another, reads map the stored id to the
survivor through `PersonOverride`, so all events of a merged person show one `person_id`.
Rows are written in the merge's own transaction and kept flat (no chains to follow).
"""

from collections.abc import Iterable
from uuid import UUID

from django.db.models import Case, UUIDField, Value, When

from bklog_app.persons.models import PersonOverride

CHUNK = 900


def record(merged: dict[int, dict[UUID, UUID]]) -> None:
    """Per project, merged-away person -> survivor. Earlier overrides that led to a merged-away
    person are repointed to its survivor first, so every override names a current person (a
    person's uuid is unique across projects: one UPDATE and one INSERT for every project)."""
    survivors = {old: new for by_old in merged.values() for old, new in by_old.items()}
    if not survivors:
        return
    PersonOverride.objects.filter(override_person_uuid__in=list(survivors)).update(
        override_person_uuid=Case(
            *[When(override_person_uuid=old, then=Value(new)) for old, new in survivors.items()],
            output_field=UUIDField(),
        )
    )
    PersonOverride.objects.bulk_create(
        [
            PersonOverride(project_id=project_id, old_person_uuid=old, override_person_uuid=new)
            for project_id, by_old in merged.items()
            for old, new in by_old.items()
        ],
        batch_size=CHUNK,
    )


def current_person_ids(project_id: int, person_ids: Iterable[UUID | str]) -> dict[str, str]:
    """stored person id -> current person id, for the ids that were merged away."""
    wanted = sorted({str(person_id) for person_id in person_ids if person_id})
    found: dict[str, str] = {}
    for start in range(0, len(wanted), CHUNK):
        rows = PersonOverride.objects.filter(
            project_id=project_id, old_person_uuid__in=wanted[start : start + CHUNK]
        ).values_list("old_person_uuid", "override_person_uuid")
        found.update((str(old), str(new)) for old, new in rows)
    return found


def apply_person_overrides(project_id: int, events: list[dict]) -> list[dict]:
    """Replace each event's `person_id` by the person it is now (in place; one query per
    CHUNK distinct person ids). Events without a person are left alone."""
    current = current_person_ids(project_id, (event.get("person_id") for event in events))
    if current:
        for event in events:
            person_id = event.get("person_id")
            if person_id in current:
                event["person_id"] = current[person_id]
    return events
