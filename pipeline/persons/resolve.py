"""Ingestion step 6: the person of each event, created, updated or merged as the event says.

This is the extension point the ingestion batch calls once per batch and project; until persons
are built, every event stores the empty person.
"""

from collections.abc import Callable, Sequence
from uuid import UUID

EMPTY_PERSON: tuple[UUID, dict] = (UUID(int=0), {})


# warn(type, event_uuid, details) records an ingestion warning for the project.
Warn = Callable[[str, str | None, dict], None]


def resolve_persons(project_id: int, events: Sequence[dict], warn: Warn) -> list[tuple[UUID, dict]]:
    """One (person_id, person properties snapshot) per event, in order.

    Each event is the normalised event (`uuid`, `event`, `distinct_id`, `properties`,
    `timestamp_ms`); events with `properties.$process_person_profile` false keep the empty person.
    """
    return [EMPTY_PERSON for _ in events]
