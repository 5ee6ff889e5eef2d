"""What happens when another writer gets in between this batch's read and its write.

The other writer is real: right after this batch has read its persons, a second resolve (with a
cache of its own, like another worker process) commits its change. No database call is faked,
but the batches' turn-taking on PostgreSQL (`store.one_batch_at_a_time`) is left out: it keeps
ingestion batches from racing, and what these tests check, the version check under it, is what
guards against the writers that take no turn (the persons API). The turns themselves:
`test_batches_of_one_project_take_turns` at the end.
"""

import contextlib
import threading
import time
import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection, connections

import pipeline.persons.cache as cache_module
from bklog_app.models import DeadLetter
from bklog_app.persons.models import Person, PersonDistinctId
from pipeline.errors import is_outage
from pipeline.ingestion.batch import ingest_messages
from pipeline.persons import store
from pipeline.persons.cache import DistinctIdCache, get_cache
from pipeline.persons.resolve import MAX_ATTEMPTS, PersonsContention
from pipeline.storage.events import list_events
from tests.persons.helpers import normalised, resolve

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_distinct_id_cache")]


@pytest.fixture
def no_turns(monkeypatch):
    monkeypatch.setattr(store, "one_batch_at_a_time", lambda project_id: contextlib.nullcontext())


def another_process_writes_after_each_read(monkeypatch, project_id: int, make_events, times: int = 1) -> list:
    """After each of the next `times` reads of this process, another process resolves
    `make_events()` and commits."""
    real_load = store.load
    own_cache = cache_module._cache
    done: list = []

    def load_then_interleave(*args, **kwargs):
        loaded = real_load(*args, **kwargs)
        if len(done) < times and cache_module._cache is own_cache:
            done.append(True)
            cache_module._cache = DistinctIdCache(100)
            try:
                done[-1] = resolve(project_id, make_events())
            finally:
                cache_module._cache = own_cache
        return loaded

    monkeypatch.setattr(store, "load", load_then_interleave)
    return done


def ids_of(person_uuid) -> set[str]:
    return set(PersonDistinctId.objects.filter(person_id=person_uuid).values_list("distinct_id", flat=True))


def test_person_merged_away_meanwhile_is_recomputed(project, monkeypatch, no_turns):
    (_, _), (y_person, _) = resolve(project.id, [normalised("e", "x"), normalised("e", "y")])[0]
    get_cache()  # the interleaving swaps caches, so make sure ours exists
    other = another_process_writes_after_each_read(
        monkeypatch, project.id, lambda: [normalised("$merge_dangerously", "y", alias="x")]
    )
    results, _ = resolve(project.id, [normalised("$merge_dangerously", "x", alias="y", **{"$set": {"mine": 1}})])
    assert other, "the other writer ran"
    survivor = Person.objects.get()
    assert survivor.uuid == y_person, "the other writer's merge stands; this batch was recomputed on top"
    assert ids_of(survivor.uuid) == {"x", "y"}
    assert results[0] == (survivor.uuid, {"mine": 1})
    assert survivor.properties == {"mine": 1}


def test_distinct_id_created_meanwhile_is_merged_not_duplicated(project, monkeypatch, no_turns):
    (_, _), (anon_2_person, _) = resolve(project.id, [normalised("e", "anon-1"), normalised("e", "anon-2")])[0]
    get_cache()
    other = another_process_writes_after_each_read(
        monkeypatch, project.id, lambda: [normalised("$identify", "user", **{"$anon_distinct_id": "anon-2"})]
    )
    results, warnings = resolve(project.id, [normalised("$identify", "user", **{"$anon_distinct_id": "anon-1"})])
    assert other
    survivor = Person.objects.get()
    assert survivor.uuid == anon_2_person, "'user' went to the other writer's person first"
    assert ids_of(survivor.uuid) == {"user", "anon-1", "anon-2"}
    assert results[0][0] == survivor.uuid and warnings == []


def test_endless_contention_retries_the_batch_later(project, monkeypatch, no_turns):
    resolve(project.id, [normalised("e", "x")])
    get_cache()
    counter = iter(range(100))
    another_process_writes_after_each_read(
        monkeypatch,
        project.id,
        lambda: [normalised("e", "x", **{"$set": {"theirs": next(counter)}})],
        times=MAX_ATTEMPTS,
    )
    with pytest.raises(PersonsContention) as info:
        resolve(project.id, [normalised("e", "x", **{"$set": {"mine": 1}})])
    assert is_outage(info.value), "the ingestion batch retries it with backoff instead of dropping it"
    assert "mine" not in Person.objects.get().properties


def test_database_outage_raises(project):
    """A real connection failure (nothing listens / the file cannot be opened) is an outage."""
    saved = dict(connection.settings_dict)
    connection.close()
    if connection.vendor == "postgresql":
        from devservers import free_port

        connection.settings_dict["PORT"] = str(free_port())
    else:
        connection.settings_dict["NAME"] = f"/nonexistent-{uuid.uuid4().hex}/bklog.sqlite3"
    try:
        with pytest.raises(Exception) as info:
            resolve(project.id, [normalised("e", "u", **{"$set": {"a": 1}})])
        assert is_outage(info.value), repr(info.value)
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    assert not Person.objects.exists()


def test_a_bug_in_one_events_person_handling_loses_no_other_event(project, monkeypatch):
    import pipeline.persons.state as state_module

    real = state_module.updates_from

    def updates_from(properties):
        if properties.get("trigger_bug"):
            raise KeyError("simulated bug in person handling")
        return real(properties)

    monkeypatch.setattr(state_module, "updates_from", updates_from)
    events = [
        {"event": "e", "distinct_id": f"u{n}", "uuid": str(uuid.uuid4()), "properties": {"trigger_bug": n == 1}}
        for n in range(3)
    ]
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    message = {"id": "m1", "token": project.api_token, "project_id": project.id, "events": events, "ip": None}
    report = ingest_messages([{**message, "now": now, "sent_at": None}])
    assert (report.stored, report.dead_lettered) == (2, 1)
    dead = DeadLetter.objects.get()
    assert dead.step == "persons" and dead.payload["uuid"] == events[1]["uuid"]
    assert "simulated bug" in dead.error
    stored = list_events(project.id)
    assert sorted(e["distinct_id"] for e in stored) == ["u0", "u2"]
    assert all(e["person_id"] for e in stored)


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="SQLite's IMMEDIATE transactions already serialise writers"
)
def test_batches_of_one_project_take_turns(project, monkeypatch):
    """A batch waits for the project's turn (held here by another connection, as by another
    worker's batch), then reads what that one committed: computed once, not redone."""
    resolve(project.id, [normalised("e", "u1", **{"$set": {"n": 1}})])
    get_cache().clear()
    loads = []
    real_load = store.load
    monkeypatch.setattr(store, "load", lambda *args, **kwargs: loads.append(1) or real_load(*args, **kwargs))
    other = connections.create_connection("default")
    done: list = []

    def batch() -> None:
        try:
            done.append(resolve(project.id, [normalised("e", "u1", **{"$set": {"m": 2}})])[0][0])
        finally:
            connections.close_all()

    try:
        other.set_autocommit(False)
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [(store.LOCK_NAMESPACE << 32) | project.id])
        thread = threading.Thread(target=batch)
        thread.start()
        time.sleep(0.5)
        assert not done and not loads, "the batch waits for its turn before it reads"
        with other.cursor() as cursor:
            cursor.execute(
                "UPDATE persons_person SET properties = %s, version = version + 1 WHERE project_id = %s",
                ['{"n": 1, "theirs": true}', project.id],
            )
        other.commit()
        thread.join(timeout=10)
    finally:
        other.close()
    assert done and done[0][1] == {"n": 1, "theirs": True, "m": 2}, done
    assert len(loads) == 1, "read once: nothing to recompute"
