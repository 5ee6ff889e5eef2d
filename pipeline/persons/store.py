"""The database side of persons: one load per batch, one transaction per batch's write.

A batch may hold the events of many projects; each project's persons are its own (distinct ids
are per project), but the database work is shared: one lock statement, one version check, one
load per CHUNK (project, distinct id) pairs and one write transaction for every project of the
batch, so a batch that spans a thousand projects makes as many round trips as one of one project.

Concurrency. Several worker processes may handle events for the same distinct ids at once.
A batch reads, computes every change in memory, then writes in one transaction that first
locks (`SELECT ... FOR UPDATE`, ordered by uuid, so two writers never wait on each other in a
cycle) every existing person it changes or deletes, and checks that each still has the version
it read. New distinct ids are inserted sorted by (project, id) under the (project, distinct_id)
unique constraint, so a concurrent creation of the same id fails with an IntegrityError instead
of making a second person. A version mismatch, a unique violation or a PostgreSQL
deadlock/serialization failure raises `Conflict`, and the caller recomputes the batch from a
fresh read. On SQLite, the settings' IMMEDIATE transactions let one writer in at a time, so
the same check-then-write is exact there too.

On PostgreSQL the ingestion batches of one project also take turns (`one_batch_at_a_time`: a
transaction-scoped advisory lock per project around read, apply and write, all of a batch's
projects taken in one statement in ascending order, so two batches never wait on each other in a
cycle), so a batch that would lose that race waits for the other's commit and reads its result
instead of computing its persons twice (two workers on one busy project redid one batch in two
or three in full, in the bench's batch scenario). The version check stays, for the other
writers (the persons API).
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


# unnest yields the sorted array in its order, so the locks are taken in ascending order.
_LOCK_PROJECTS = "SELECT pg_advisory_xact_lock(t.key) FROM unnest(%s::bigint[]) AS t(key)"


class Conflict(Exception):
    """A concurrent writer changed persons this batch read; recompute it from a fresh read."""

    def __init__(self, reason: str, cause: Exception | None = None):
        super().__init__(reason)
        self.cause = cause


@contextmanager
def one_batch_at_a_time(project_ids: Iterable[int]) -> Iterator[None]:
    """Hold these projects' persons locks (PostgreSQL) until the block's transaction ends, taken
    in one statement in ascending order. SQLite needs none: its IMMEDIATE write transactions
    already let one writer in at a time."""
    if connection.vendor != "postgresql":
        yield
        return
    keys = sorted({(LOCK_NAMESPACE << 32) | project_id for project_id in project_ids})
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_LOCK_PROJECTS, [keys])
        yield


def load(wanted: dict[int, Sequence[str]], cache: DistinctIdCache | None) -> dict[int, dict[str, StoredPerson]]:
    """project id -> distinct id -> committed person, for the wanted ids that have one: a
    version check of cached entries, then a load of the rest (a query each per CHUNK)."""
    found: dict[int, dict[str, StoredPerson]] = {project_id: {} for project_id in wanted}
    if cache is not None:
        cached = {project_id: cache.get_many(project_id, ids) for project_id, ids in wanted.items()}
        current = _versions({person.uuid for persons in cached.values() for person in persons.values()})
        for project_id, persons in cached.items():
            stale = [did for did, person in persons.items() if current.get(person.uuid) != person.version]
            cache.discard(project_id, stale)
            found[project_id] = {did: p for did, p in persons.items() if current.get(p.uuid) == p.version}
    missing = [(project_id, did) for project_id, ids in wanted.items() for did in ids if did not in found[project_id]]
    loaded = _load_by_distinct_id(missing)
    for project_id, persons in loaded.items():
        if cache is not None:
            cache.put_many(project_id, persons)
        found[project_id].update(persons)
    return found


def write(batch: dict[int, tuple[BatchState, Changes]], on_commit: Callable[[], None] | None = None) -> None:
    """Commit every project's changes (project id -> its state and changes) in one transaction,
    or raise `Conflict` having written nothing. `on_commit` runs once the changes are committed
    (never for a rolled-back write)."""
    expected: dict[UUID, int] = {}
    for state, changes in batch.values():
        expected.update(changes.expected_versions(state))
    try:
        # No savepoint inside the batch's transaction (one_batch_at_a_time): the persons inserted
        # here then carry the transaction's own id, by which the distinct ids' check (migration
        # 0004_person_checked_per_statement) knows it need not lock them. A failure still rolls
        # back the whole batch's transaction, which `Conflict` recomputes anyway.
        with transaction.atomic(savepoint=False):
            if on_commit is not None:
                transaction.on_commit(on_commit)
            _lock_and_check(expected)
            rows.insert([(project_id, person) for project_id, (_, c) in batch.items() for person in c.inserts])
            rows.insert_distinct_ids(
                sorted((project_id, *pair) for project_id, (_, c) in batch.items() for pair in c.new_distinct_ids)
            )
            deletes = {old: new for _, changes in batch.values() for old, new in changes.deletes.items()}
            _move_distinct_ids(deletes)
            rows.update([person for _, changes in batch.values() for person in changes.updates])
            overrides.record({project_id: changes.overrides for project_id, (_, changes) in batch.items()})
            if deletes:
                Person.objects.filter(uuid__in=list(deletes)).delete()
    except IntegrityError as exc:
        raise Conflict("a distinct id was given a person by another writer", exc) from exc
    except OperationalError as exc:
        if getattr(exc.__cause__, "sqlstate", None) in RETRYABLE_SQLSTATES:
            raise Conflict("the database resolved a lock conflict by aborting this batch", exc) from exc
        raise


def _versions(uuids: set[UUID]) -> dict[UUID, int]:
    """Current versions by uuid (a person's uuid is unique across projects)."""
    versions: dict[UUID, int] = {}
    for chunk in _chunks(sorted(uuids)):
        versions.update(Person.objects.filter(uuid__any=chunk).values_list("uuid", "version"))
    return versions


def _load_by_distinct_id(pairs: Sequence[tuple[int, str]]) -> dict[int, dict[str, StoredPerson]]:
    persons: dict[UUID, StoredPerson] = {}
    result: dict[int, dict[str, StoredPerson]] = {}
    for chunk in _chunks(pairs):
        for project_id, distinct_id, uuid, properties, created_at, is_identified, version in rows.read(chunk):
            if uuid not in persons:
                persons[uuid] = StoredPerson(uuid, properties or {}, created_at, is_identified, version)
            result.setdefault(project_id, {})[distinct_id] = persons[uuid]
    return result


def _lock_and_check(expected: dict[UUID, int]) -> None:
    if not expected:
        return
    current: dict[UUID, int] = {}
    for chunk in _chunks(sorted(expected)):
        current.update(
            Person.objects.select_for_update().filter(uuid__any=chunk).order_by("uuid").values_list("uuid", "version")
        )
    changed = [uuid for uuid, version in expected.items() if current.get(uuid) != version]
    if changed:
        raise Conflict(f"{len(changed)} person(s) changed or deleted since this batch read them")


def _move_distinct_ids(survivors: dict[UUID, UUID]) -> None:
    """Every distinct id of a merged-away person moves to its survivor, in one UPDATE."""
    if not survivors:
        return
    PersonDistinctId.objects.filter(person_id__in=list(survivors)).update(
        person_id=Case(
            *[When(person_id=old, then=Value(new)) for old, new in survivors.items()],
            output_field=UUIDField(),
        )
    )


def _chunks(items: Sequence) -> Iterable[Sequence]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]
