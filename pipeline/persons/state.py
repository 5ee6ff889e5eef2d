"""The persons of one batch, in memory: events applied in order, changes collected for one write.

The batch loads the persons of all its distinct ids once, applies every event here (so a later
event sees what an earlier one did), and `changes()` says what to write. Each event is applied
inside a savepoint of this in-memory state: if applying it raises (a bug, not bad data), the
state is restored to what it was before that event and the error is the event's outcome, so
the other events of the batch are unaffected.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from pipeline.errors import is_outage
from pipeline.persons import merges
from pipeline.persons.properties import (
    PropertyUpdates,
    apply_updates,
    initial_properties,
    merged_properties,
    updates_from,
)
from pipeline.uuids import uuid7


@dataclass(frozen=True)
class StoredPerson:
    """A person as committed in the database (and as the distinct_id cache holds it)."""

    uuid: UUID
    properties: dict
    created_at: datetime
    is_identified: bool
    version: int


@dataclass(eq=False)
class WorkingPerson:
    uuid: UUID
    properties: dict
    created_at: datetime
    is_identified: bool
    loaded_version: int | None  # None: created by this batch
    changed: bool = False
    merged_into: "WorkingPerson | None" = None

    @property
    def is_new(self) -> bool:
        return self.loaded_version is None

    def survivor(self) -> "WorkingPerson":
        person = self
        while person.merged_into is not None:
            person = person.merged_into
        return person

    def stored(self) -> StoredPerson:
        """What the database holds for this person once the batch's write is committed."""
        version = 0 if self.is_new else self.loaded_version + (1 if self.changed else 0)
        return StoredPerson(self.uuid, self.properties, self.created_at, self.is_identified, version)


@dataclass(slots=True)  # not frozen: one per event, and a frozen dataclass's __init__ costs 3 times as much
class Outcome:
    """What one event got: its person and properties snapshot, or the error that stopped it."""

    person_uuid: UUID | None = None
    properties: dict | None = None
    warnings: tuple[tuple[str, dict], ...] = ()
    error: Exception | None = None


@dataclass
class Changes:
    inserts: list[WorkingPerson] = field(default_factory=list)
    updates: list[WorkingPerson] = field(default_factory=list)
    deletes: dict[UUID, UUID] = field(default_factory=dict)  # merged-away stored person -> survivor
    # Every person merged away, stored or created by this batch: events were stamped with it.
    overrides: dict[UUID, UUID] = field(default_factory=dict)
    new_distinct_ids: list[tuple[str, UUID]] = field(default_factory=list)  # sorted by distinct id

    @property
    def empty(self) -> bool:
        return not (self.inserts or self.updates or self.deletes or self.new_distinct_ids)

    def expected_versions(self, state: "BatchState") -> dict[UUID, int]:
        """The version every existing person we write or delete must still have."""
        return {
            person.uuid: person.loaded_version
            for person in state.persons.values()
            if not person.is_new and (person.changed or person.merged_into is not None)
        }


class _Savepoint:
    """Undo log for one event: restores touched persons, owners and new ids on failure."""

    def __init__(self, state: "BatchState"):
        self.state = state
        self.persons: dict[int, tuple[WorkingPerson, dict]] = {}
        self.owners: dict[str, WorkingPerson | None] = {}
        self.created: list[UUID] = []

    def touch(self, person: WorkingPerson) -> None:
        if id(person) not in self.persons:
            # Field values; properties are replaced, never changed in place.
            self.persons[id(person)] = (person, vars(person).copy())

    def rollback(self) -> None:
        for person, saved in self.persons.values():
            for name, value in saved.items():
                setattr(person, name, value)
        for distinct_id, previous in self.owners.items():
            if previous is None:
                self.state.owners.pop(distinct_id, None)
                self.state.new_ids.pop(distinct_id, None)
            else:
                self.state.owners[distinct_id] = previous
        for uuid in self.created:
            self.state.persons.pop(uuid, None)


class BatchState:
    def __init__(self, loaded: dict[str, StoredPerson]):
        self.persons: dict[UUID, WorkingPerson] = {}
        # distinct id -> the person it pointed to when last assigned (follow `survivor()`).
        self.owners: dict[str, WorkingPerson] = {}
        # distinct ids this batch adds, in the order it added them.
        self.new_ids: dict[str, None] = {}
        for distinct_id, stored in loaded.items():
            person = self.persons.get(stored.uuid)
            if person is None:
                person = WorkingPerson(
                    stored.uuid, stored.properties, stored.created_at, stored.is_identified, stored.version
                )
                self.persons[stored.uuid] = person
            self.owners[distinct_id] = person
        self._savepoint: _Savepoint | None = None

    # --- events ---------------------------------------------------------------------------

    def apply(self, event: dict) -> Outcome:
        """Apply one event; on an error the state is as if the event had not been seen."""
        self._savepoint = _Savepoint(self)
        warnings: list[tuple[str, dict]] = []
        try:
            person = self._apply(event, warnings)
        except Exception as exc:
            if is_outage(exc):
                raise
            self._savepoint.rollback()
            return Outcome(error=exc)
        finally:
            self._savepoint = None
        return Outcome(person.uuid, person.properties, tuple(warnings))

    def _apply(self, event: dict, warnings: list) -> WorkingPerson:
        updates = updates_from(event.get("properties") or {})
        timestamp_ms = event["timestamp_ms"]
        request = merges.merge_request(event)
        if request is None:
            return self._upsert(event["distinct_id"], updates, timestamp_ms)
        if request.illegal_id is not None:
            details = {**request.warning_details(), "illegal_distinct_id": request.illegal_id}
            warnings.append((merges.CANNOT_MERGE_WITH_ILLEGAL_DISTINCT_ID, details))
            return self._upsert(request.into, updates, timestamp_ms)
        return self._merge(request, updates, timestamp_ms, warnings)

    def _upsert(self, distinct_id: str, updates: PropertyUpdates, timestamp_ms: int) -> WorkingPerson:
        person = self.person_of(distinct_id)
        if person is None:
            return self._create(distinct_id, updates, timestamp_ms)
        self._update(person, updates)
        return person

    def _merge(
        self, request: merges.MergeRequest, updates: PropertyUpdates, timestamp_ms: int, warnings: list
    ) -> WorkingPerson:
        into = self.person_of(request.into)
        other = self.person_of(request.other)
        if into is None and other is None:
            person = self._create(request.into, updates, timestamp_ms, identified=True)
            self._assign(request.other, person)
            return person
        if into is None:
            self._assign(request.into, other)
            self._identify(other)
            self._update(other, updates)
            return other
        if other is None:
            self._assign(request.other, into)
            self._identify(into)
            self._update(into, updates)
            return into
        if into is not other:
            if other.is_identified and not request.allow_identified:
                warnings.append((merges.CANNOT_MERGE_ALREADY_IDENTIFIED, request.warning_details()))
            else:
                self._merge_persons(other, into)
        self._update(into, updates)
        return into

    # --- primitives (each records what it changes in the event's savepoint) --------------

    def person_of(self, distinct_id: str) -> WorkingPerson | None:
        person = self.owners.get(distinct_id)
        return person.survivor() if person is not None else None

    def _create(
        self, distinct_id: str, updates: PropertyUpdates, timestamp_ms: int, identified: bool = False
    ) -> WorkingPerson:
        person = WorkingPerson(
            uuid=uuid7(),
            properties=initial_properties(updates),
            created_at=datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC),  # only a new person needs it
            is_identified=identified,
            loaded_version=None,
            changed=True,
        )
        self.persons[person.uuid] = person
        self._savepoint.created.append(person.uuid)
        self._assign(distinct_id, person)
        return person

    def _assign(self, distinct_id: str, person: WorkingPerson) -> None:
        """Give a distinct id that has no person to `person`."""
        self._savepoint.owners.setdefault(distinct_id, self.owners.get(distinct_id))
        self._savepoint.touch(person)
        self.owners[distinct_id] = person
        self.new_ids[distinct_id] = None
        person.changed = True

    def _update(self, person: WorkingPerson, updates: PropertyUpdates) -> None:
        properties = apply_updates(person.properties, updates)
        if properties is not person.properties:
            self._savepoint.touch(person)
            person.properties = properties
            person.changed = True

    def _identify(self, person: WorkingPerson) -> None:
        if not person.is_identified:
            self._savepoint.touch(person)
            person.is_identified = True
            person.changed = True

    def _merge_persons(self, other: WorkingPerson, into: WorkingPerson) -> None:
        """`other` is merged away: its ids (followed through `survivor()`) now lead to `into`."""
        self._savepoint.touch(other)
        self._savepoint.touch(into)
        into.properties = merged_properties(other.properties, into.properties)
        into.created_at = min(into.created_at, other.created_at)
        into.is_identified = True
        into.changed = True
        other.merged_into = into

    # --- the write ------------------------------------------------------------------------

    def changes(self) -> Changes:
        changes = Changes()
        for person in self.persons.values():
            if person.merged_into is not None:
                changes.overrides[person.uuid] = person.survivor().uuid
                if not person.is_new:
                    changes.deletes[person.uuid] = person.survivor().uuid
            elif person.is_new:
                changes.inserts.append(person)
            elif person.changed:
                changes.updates.append(person)
        changes.new_distinct_ids = sorted(
            (distinct_id, self.person_of(distinct_id).uuid) for distinct_id in self.new_ids
        )
        return changes

    def committed(self) -> dict[str, StoredPerson]:
        """distinct id -> person as committed, for every distinct id the batch knows."""
        stored: dict[UUID, StoredPerson] = {}
        result = {}
        for distinct_id in self.owners:
            person = self.person_of(distinct_id)
            if person.uuid not in stored:
                stored[person.uuid] = person.stored()
            result[distinct_id] = stored[person.uuid]
        return result
