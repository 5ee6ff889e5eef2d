"""Two worker processes merging the same ids at the same moment end with exactly one person.

To make the race certain rather than likely, each scenario:
1. holds a lock that both workers' writes need (PostgreSQL: row locks on the persons, or an
   uncommitted row with the distinct id both will insert; SQLite: the database write lock);
2. steers one merge message to each of its two workers with Celery's remote control (only one
   of them consumes the ingestion queue while a message is sent; see `Steering`);
3. on PostgreSQL, waits until both workers are blocked on that lock (pg_stat_activity), so both
   have read the old state and planned their merge; then releases the lock.
The second worker to write must notice the first one's merge and recompute. On SQLite, which
cannot show who waits on its lock, the workers are released once both have received their
message; the exact interleaving is covered in-process by test_conflicts.py on both databases.
"""

import sqlite3
import time
import uuid

import pytest
from django.db import connection

from bklog_app.celery import app
from bklog_app.models import DeadLetter
from bklog_app.persons.models import Person, PersonDistinctId
from pipeline.queues import Queue
from pipeline.redis import get_redis
from tests.persons.helpers import api_events, captured, post_batch

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

INGESTION = Queue.INGESTION.value
DEADLINE_SECONDS = 60


def wait_until(condition, what: str, workers=()) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    logs = "\n".join(worker.tail(30) for worker in workers)
    pytest.fail(f"gave up waiting for {what}\n{logs}")


def hostnames(timeout: float = 0.5) -> set[str]:
    return {name for reply in app.control.ping(timeout=timeout) for name in reply}


class Steering:
    """Which of this test's two workers consumes the ingestion queue (remote control).

    Only these two workers are ever steered: a worker whose queue was cancelled and added back
    forgets that queue on its next broker reconnect, so shared workers are left alone. A session
    worker, when one runs, keeps consuming; it has two pool processes, so a message it takes
    still runs beside the other one, and the race is still between two processes.
    """

    def __init__(self, mine: list[str]):
        self.mine = mine

    def only(self, hostname: str) -> None:
        others = [name for name in self.mine if name != hostname]
        app.control.cancel_consumer(INGESTION, destination=others, reply=True, timeout=5, limit=len(others))
        app.control.add_consumer(INGESTION, destination=[hostname], reply=True, timeout=5, limit=1)


class PostgresBarrier:
    def __init__(self):
        import psycopg

        params = connection.settings_dict
        options = {
            "host": params["HOST"],
            "port": params["PORT"],
            "user": params["USER"],
            "dbname": params["NAME"],
            "password": params.get("PASSWORD") or None,
        }
        self.holder = psycopg.connect(**options)
        self.commit = True
        self.watcher = psycopg.connect(**options, autocommit=True)

    def lock_persons(self, person_uuids: list) -> None:
        self.commit = True
        self.holder.execute("SELECT uuid FROM persons_person WHERE uuid = ANY(%s) FOR UPDATE", [person_uuids])

    def hold_distinct_id(self, project_id: int, distinct_id: str) -> None:
        self.commit = False
        placeholder = uuid.uuid4()
        self.holder.execute(
            "INSERT INTO persons_person (uuid, project_id, properties, created_at, is_identified, version) "
            "VALUES (%s, %s, '{}', now(), false, 0)",
            [placeholder, project_id],
        )
        self.holder.execute(
            "INSERT INTO persons_persondistinctid (project_id, distinct_id, person_id) VALUES (%s, %s, %s)",
            [project_id, distinct_id, placeholder],
        )

    def waiters(self) -> int:
        return self.watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()[0]

    def release(self) -> None:
        """Commit a row lock; roll back a held distinct id, so that no placeholder person exists."""
        self.holder.commit() if self.commit else self.holder.rollback()

    def close(self) -> None:
        self.holder.close()
        self.watcher.close()


class SqliteBarrier:
    def __init__(self):
        self.holder = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None, timeout=30)

    def lock_persons(self, person_uuids: list) -> None:
        self.holder.execute("BEGIN IMMEDIATE")

    def hold_distinct_id(self, project_id: int, distinct_id: str) -> None:
        self.holder.execute("BEGIN IMMEDIATE")

    def waiters(self) -> int | None:
        return None

    def release(self) -> None:
        self.holder.execute("ROLLBACK")

    def close(self) -> None:
        self.holder.close()


@pytest.fixture
def race(client, project, api_client, make_worker):
    """Two ingestion workers, a barrier, and `run(first, second, hold)` to race two messages."""
    before = hostnames(timeout=1.0)
    workers = [make_worker("ingestion"), make_worker("ingestion")]
    seen: set[str] = set()

    def both_answer() -> bool:
        # make_worker names its workers test-<role>-...; a session worker is test-all-...
        seen.update(name for name in hostnames() - before if name.startswith("test-ingestion-"))
        return len(seen) >= 2

    wait_until(both_answer, "both workers to answer remote control", workers)
    assert len(seen) == 2, seen
    mine = sorted(seen)
    steering = Steering(mine)
    barrier = PostgresBarrier() if connection.vendor == "postgresql" else SqliteBarrier()
    sent: list[dict] = []

    def send(*events):
        post_batch(client, project.api_token, list(events))
        sent.extend(events)

    def unacked() -> int:
        return get_redis().hlen("unacked")

    def run(first: dict, second: dict, hold) -> list[dict]:
        hold(barrier)
        try:
            for number, (hostname, event) in enumerate(zip(mine, (first, second), strict=True), start=1):
                steering.only(hostname)
                send(event)
                if barrier.waiters() is None:
                    wait_until(lambda n=number: unacked() >= n, f"message {number} to be delivered", workers)
                else:
                    wait_until(lambda n=number: barrier.waiters() >= n, f"{number} worker(s) blocked", workers)
        finally:
            barrier.release()
        return api_events(api_client, project.id, len(sent))

    try:
        yield send, lambda: api_events(api_client, project.id, len(sent)), run
    finally:
        barrier.close()


def person_ids_of(project, distinct_ids) -> set:
    return set(
        PersonDistinctId.objects.filter(project=project, distinct_id__in=distinct_ids).values_list(
            "person_id", flat=True
        )
    )


def person_of(project, distinct_id: str) -> Person:
    return PersonDistinctId.objects.select_related("person").get(project=project, distinct_id=distinct_id).person


def test_two_workers_racing_on_the_same_ids(project, race):
    """Three races, one worker pair (starting workers is the slow part)."""
    opposite_merges_of_two_existing_persons(project, *race)
    two_identifies_creating_the_same_distinct_id(project, *race)
    concurrent_updates_of_one_person_lose_nothing(project, *race)
    assert not DeadLetter.objects.exists()


def opposite_merges_of_two_existing_persons(project, send, read, run):
    send(
        captured("pageview", "x", properties={"$set": {"x": 1}}),
        captured("pageview", "y", properties={"$set": {"y": 1}}),
    )
    read()
    persons = sorted(str(p) for p in person_ids_of(project, ["x", "y"]))
    assert len(persons) == 2

    events = run(
        captured("$merge_dangerously", "x", properties={"alias": "y"}),
        captured("$merge_dangerously", "y", properties={"alias": "x"}),
        lambda barrier: barrier.lock_persons(persons),
    )
    person = person_of(project, "x")
    assert set(person.distinct_ids.values_list("distinct_id", flat=True)) == {"x", "y"}
    assert person.properties == {"x": 1, "y": 1}
    assert not Person.objects.filter(uuid__in=persons).exclude(uuid=person.uuid).exists()
    assert {e["person_id"] for e in events if e["distinct_id"] in ("x", "y")} == {str(person.uuid)}


def two_identifies_creating_the_same_distinct_id(project, send, read, run):
    send(captured("pageview", "anon-1"), captured("pageview", "anon-2"))
    read()

    events = run(
        captured("$identify", "user", properties={"$anon_distinct_id": "anon-1"}),
        captured("$identify", "user", properties={"$anon_distinct_id": "anon-2"}),
        lambda barrier: barrier.hold_distinct_id(project.id, "user"),
    )
    person = person_of(project, "user")
    assert set(person.distinct_ids.values_list("distinct_id", flat=True)) == {"user", "anon-1", "anon-2"}
    ids = ("user", "anon-1", "anon-2")
    assert {e["person_id"] for e in events if e["distinct_id"] in ids} == {str(person.uuid)}


def concurrent_updates_of_one_person_lose_nothing(project, send, read, run):
    """Here only the version check protects: no constraint would notice a lost update."""
    send(captured("pageview", "u", properties={"$set": {"start": 1}}))
    read()
    person_id = str(person_of(project, "u").uuid)

    events = run(
        captured("pageview", "u", properties={"$set": {"a": 1}}),
        captured("pageview", "u", properties={"$set": {"b": 1}}),
        lambda barrier: barrier.lock_persons([person_id]),
    )
    assert person_of(project, "u").properties == {"start": 1, "a": 1, "b": 1}
    snapshots = {frozenset(e["person_properties"]) for e in events if e["distinct_id"] == "u"}
    assert snapshots in (
        {frozenset({"start"}), frozenset({"start", "a"}), frozenset({"start", "a", "b"})},
        {frozenset({"start"}), frozenset({"start", "b"}), frozenset({"start", "a", "b"})},
    ), "the second writer recomputed on top of the first"
