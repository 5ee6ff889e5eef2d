"""The database side of persons: one load per batch, one transaction per batch's write.

Concurrency. Several worker processes may handle events for the same distinct ids at once.
A batch reads, computes every change in memory, then writes in one transaction that first
locks (`SELECT ... FOR UPDATE`, ordered by uuid, so two writers never wait on each other in a
cycle) every existing person it changes or deletes, and checks that each still has the version
it read. New distinct ids are inserted sorted by id under the (project, distinct_id) unique
constraint, so a concurrent creation of the same id fails with an IntegrityError instead of
making a second person. A version mismatch, a unique violation or a PostgreSQL
deadlock/serialization failure raises `Conflict`, and the caller recomputes the batch from a
fresh read. On SQLite, the settings' IMMEDIATE transactions let one writer in at a time, so
the same check-then-write is exact there too.

On PostgreSQL the ingestion batches of one project also take turns (`one_batch_at_a_time`: a
transaction-scoped advisory lock around read, apply and write), so a batch that would lose
that race waits for the other's commit and reads its result instead of computing its persons
twice (two workers on one busy project redid one batch in two or three in full, in the bench's
batch scenario). The version check stays, for the other writers (the persons API).
"""

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from uuid import UUID

from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import Case, UUIDField, Value, When

from bklog_app.persons.models import Person, PersonDistinctId
from pipeline.persons import overrides, rows
from pipeline.persons.cache import DistinctIdCache
from pipeline.persons.lookups import AnyOf  # noqa: F401 (registers the `any` lookup)
from pipeline.persons.state import BatchState, Changes, StoredPerson

# Ids per query: under SQLite's historic 999-parameter limit for IN (...) lists.
CHUNK = 900

# pg_advisory_xact_lock's key for a project's persons: this namespace in the high 32 bits.
LOCK_NAMESPACE = 0x70657273  # "pers"

# PostgreSQL SQLSTATEs that mean "another transaction got in the way; run yours again".
RETRYABLE_SQLSTATES = {"40P01", "40001"}  # deadlock_detected, serialization_failure


class Conflict(Exception):
    """A concurrent writer changed persons this batch read; recompute it from a fresh read."""

    def __init__(self, reason: str, cause: Exception | None = None):
        super().__init__(reason)
        self.cause = cause


@contextmanager
def one_batch_at_a_time(project_id: int) -> Iterator[None]:
    """Hold the project's persons lock (PostgreSQL) until the block's transaction ends. SQLite
    needs none: its IMMEDIATE write transactions already let one writer in at a time."""
    if connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [(LOCK_NAMESPACE << 32) | project_id])
        yield


def load(project_id: int, distinct_ids: Iterable[str], cache: DistinctIdCache | None) -> dict[str, StoredPerson]:
    """distinct id -> committed person for those that have one: at most two queries per
    CHUNK ids (a version check of cached entries, then a load of the rest)."""
    wanted = list(dict.fromkeys(distinct_ids))
    found: dict[str, StoredPerson] = {}
    if cache is not None:
        cached = cache.get_many(project_id, wanted)
        current = _versions(project_id, {person.uuid for person in cached.values()})
        stale = [did for did, person in cached.items() if current.get(person.uuid) != person.version]
        cache.discard(project_id, stale)
        found = {did: person for did, person in cached.items() if current.get(person.uuid) == person.version}
    missing = [did for did in wanted if did not in found]
    loaded = _load_by_distinct_id(project_id, missing)
    if cache is not None:
        cache.put_many(project_id, loaded)
    return {**found, **loaded}


def write(project_id: int, state: BatchState, changes: Changes, on_commit: Callable[[], None] | None = None) -> None:
    """Commit the batch's changes in one transaction, or raise `Conflict` having written nothing.
    `on_commit` runs once the changes are committed (never for a rolled-back write)."""
    expected = changes.expected_versions(state)
    try:
        with transaction.atomic():
            if on_commit is not None:
                transaction.on_commit(on_commit)
            _lock_and_check(project_id, expected)
            rows.insert(project_id, changes.inserts)
            rows.insert_distinct_ids(project_id, changes.new_distinct_ids)
            _move_distinct_ids(project_id, changes.deletes)
            rows.update(changes.updates)
            overrides.record(project_id, changes.overrides)
            if changes.deletes:
                Person.objects.filter(project_id=project_id, uuid__in=list(changes.deletes)).delete()
    except IntegrityError as exc:
        raise Conflict("a distinct id was given a person by another writer", exc) from exc
    except OperationalError as exc:
        if getattr(exc.__cause__, "sqlstate", None) in RETRYABLE_SQLSTATES:
            raise Conflict("the database resolved a lock conflict by aborting this batch", exc) from exc
        raise


def _versions(project_id: int, uuids: set[UUID]) -> dict[UUID, int]:
    versions: dict[UUID, int] = {}
    for chunk in _chunks(sorted(uuids)):
        versions.update(Person.objects.filter(project_id=project_id, uuid__any=chunk).values_list("uuid", "version"))
    return versions


def _load_by_distinct_id(project_id: int, distinct_ids: Sequence[str]) -> dict[str, StoredPerson]:
    persons: dict[UUID, StoredPerson] = {}
    result: dict[str, StoredPerson] = {}
    for chunk in _chunks(distinct_ids):
        rows = PersonDistinctId.objects.filter(project_id=project_id, distinct_id__any=chunk).values_list(
            "distinct_id",
            "person_id",
            "person__properties",
            "person__created_at",
            "person__is_identified",
            "person__version",
        )
        for distinct_id, uuid, properties, created_at, is_identified, version in rows:
            if uuid not in persons:
                persons[uuid] = StoredPerson(uuid, properties or {}, created_at, is_identified, version)
            result[distinct_id] = persons[uuid]
    return result


def _lock_and_check(project_id: int, expected: dict[UUID, int]) -> None:
    if not expected:
        return
    current: dict[UUID, int] = {}
    for chunk in _chunks(sorted(expected)):
        current.update(
            Person.objects.select_for_update()
            .filter(project_id=project_id, uuid__any=chunk)
            .order_by("uuid")
            .values_list("uuid", "version")
        )
    changed = [uuid for uuid, version in expected.items() if current.get(uuid) != version]
    if changed:
        raise Conflict(f"{len(changed)} person(s) changed or deleted since this batch read them")


def _move_distinct_ids(project_id: int, survivors: dict[UUID, UUID]) -> None:
    """Every distinct id of a merged-away person moves to its survivor, in one UPDATE."""
    if not survivors:
        return
    PersonDistinctId.objects.filter(project_id=project_id, person_id__in=list(survivors)).update(
        person_id=Case(
            *[When(person_id=old, then=Value(new)) for old, new in survivors.items()],
            output_field=UUIDField(),
        )
    )


def _chunks(items: Sequence) -> Iterable[Sequence]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]
