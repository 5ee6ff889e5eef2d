"""An ingestion batch that spans many projects: one round of person queries for all of them,
each project's persons its own, and one project's conflict or failing write harming no other's
events (pipeline/persons/resolve.py, resolve_batch)."""

import contextlib
import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

import pipeline.persons.cache as cache_module
from bklog_app.persons.models import Person, PersonDistinctId, PersonOverride
from pipeline.ingestion.batch import ingest_messages
from pipeline.persons import store
from pipeline.persons.cache import DistinctIdCache, get_cache
from pipeline.persons.resolve import resolve_batch
from pipeline.storage.events import list_events
from tests.factories import make_project
from tests.persons.helpers import normalised, resolve

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_distinct_id_cache")]


def resolve_all(events: dict[int, list[dict]]) -> tuple[dict, list[tuple]]:
    warnings: list[tuple] = []
    results = resolve_batch(events, lambda *warning: warnings.append(warning))
    return results, warnings


def person_of(project_id: int, distinct_id: str) -> Person:
    return Person.objects.get(project_id=project_id, distinct_ids__distinct_id=distinct_id)


def person_queries(queries) -> list[str]:
    return [q["sql"] for q in queries if "persons_" in q["sql"]]


def test_each_project_gets_its_own_persons():
    a, b, c = make_project(), make_project(), make_project()
    results, warnings = resolve_all(
        {
            a.id: [
                normalised("e", "u", **{"$set": {"p": "a"}}),
                normalised("$identify", "u", **{"$anon_distinct_id": "anon"}),
            ],
            b.id: [normalised("e", "u", **{"$set": {"p": "b"}}), normalised("e", "anon")],
            c.id: [normalised("e", "u", **{"$process_person_profile": False})],
        }
    )
    assert warnings == []
    assert results[a.id][0][0] == results[a.id][1][0] == person_of(a.id, "u").uuid == person_of(a.id, "anon").uuid
    assert results[b.id][0] == (person_of(b.id, "u").uuid, {"p": "b"})
    assert results[b.id][1][0] == person_of(b.id, "anon").uuid != results[b.id][0][0]
    assert results[c.id] == [(uuid.UUID(int=0), {})]
    assert person_of(a.id, "u").is_identified and not person_of(b.id, "u").is_identified
    assert Person.objects.filter(project=c).count() == 0
    assert Person.objects.count() == 3


def test_merges_across_a_batch_of_projects_stay_in_their_project():
    a, b = make_project(), make_project()
    resolve_all(
        {a.id: [normalised("e", "x"), normalised("e", "y")], b.id: [normalised("e", "x"), normalised("e", "y")]}
    )
    b_x, b_y = person_of(b.id, "x").uuid, person_of(b.id, "y").uuid
    results, _ = resolve_all({a.id: [normalised("$merge_dangerously", "x", alias="y")], b.id: [normalised("e", "y")]})
    survivor = person_of(a.id, "x")
    assert person_of(a.id, "y").uuid == survivor.uuid == results[a.id][0][0]
    assert (person_of(b.id, "x").uuid, person_of(b.id, "y").uuid) == (b_x, b_y), "project b's persons untouched"
    assert results[b.id][0][0] == b_y
    assert list(PersonOverride.objects.values_list("project_id", "override_person_uuid")) == [(a.id, survivor.uuid)]


def test_person_queries_do_not_grow_with_the_projects_of_a_batch():
    def queries_for(projects: int) -> tuple[int, int]:
        made = [make_project() for _ in range(projects)]
        events = {
            p.id: [normalised("e", f"u{n}", n, **{"$set": {"n": n}}) for n in range(5)]
            + [normalised("$identify", "u0", **{"$anon_distinct_id": "anon"})]
            for p in made
        }
        with CaptureQueriesContext(connection) as queries:
            results, _ = resolve_all(events)
        assert all(isinstance(r, tuple) for rs in results.values() for r in rs)
        return len(person_queries(queries)), len(queries)

    one_persons, one_all = queries_for(1)
    many_persons, many_all = queries_for(12)
    assert many_persons == one_persons, "one load and one write for every project, not one per project"
    assert many_all == one_all
    assert Person.objects.count() == 13 * 5


def test_a_conflict_in_one_project_recomputes_the_batch_and_keeps_both(monkeypatch):
    a, b = make_project(), make_project()
    resolve_all({a.id: [normalised("e", "x", **{"$set": {"n": 1}})], b.id: [normalised("e", "x")]})
    get_cache()
    # The turns would keep the other writer out (pipeline/persons/store.py): it plays a writer
    # that takes none, as the persons API.
    monkeypatch.setattr(store, "one_batch_at_a_time", lambda project_ids: contextlib.nullcontext())
    real_load = store.load
    own_cache = cache_module._cache
    loads: list = []

    def load_then_another_writer(*args, **kwargs):
        loaded = real_load(*args, **kwargs)
        if cache_module._cache is own_cache:
            loads.append(1)
            if len(loads) == 1:  # another worker process commits a change to project a's person
                cache_module._cache = DistinctIdCache(100)
                try:
                    resolve(a.id, [normalised("e", "x", **{"$set": {"theirs": 1}})])
                finally:
                    cache_module._cache = own_cache
        return loaded

    monkeypatch.setattr(store, "load", load_then_another_writer)
    results, _ = resolve_all(
        {a.id: [normalised("e", "x", **{"$set": {"mine": 1}})], b.id: [normalised("e", "x", **{"$set": {"b": 1}})]}
    )
    assert len(loads) == 2, "read again after the conflict"
    assert results[a.id][0][1] == {"n": 1, "theirs": 1, "mine": 1}
    assert person_of(a.id, "x").properties == {"n": 1, "theirs": 1, "mine": 1}
    assert results[b.id][0][1] == {"b": 1}
    assert person_of(b.id, "x").version == 1, "project b written once: the refused write left nothing"


def test_a_failing_write_in_one_project_harms_no_other_project():
    """The database refuses one event's distinct id (longer than the column): that event alone
    fails; the other events of its project and every other project's are stored."""
    a, b, c = make_project(), make_project(), make_project()
    results, _ = resolve_all(
        {
            a.id: [normalised("e", "a-1"), normalised("e", "x" * 401), normalised("e", "a-2")],
            b.id: [normalised("e", "b-1"), normalised("$identify", "b-2", **{"$anon_distinct_id": "b-1"})],
            c.id: [normalised("e", "c-1", **{"$set": {"c": 1}})],
        }
    )
    assert isinstance(results[a.id][0], tuple) and isinstance(results[a.id][2], tuple)
    assert results[b.id][0][0] == results[b.id][1][0] == person_of(b.id, "b-2").uuid
    assert results[c.id] == [(person_of(c.id, "c-1").uuid, {"c": 1})]
    stored = set(PersonDistinctId.objects.values_list("project_id", "distinct_id"))
    assert {(a.id, "a-1"), (a.id, "a-2"), (b.id, "b-1"), (b.id, "b-2"), (c.id, "c-1")} <= stored
    if connection.vendor == "postgresql":
        assert isinstance(results[a.id][1], Exception)
        assert len(stored) == 5
    else:  # SQLite does not enforce varchar lengths
        assert isinstance(results[a.id][1], tuple)


def test_a_batch_of_many_projects_through_ingestion():
    made = [make_project() for _ in range(5)]
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    messages = [
        {
            "id": str(uuid.uuid4()),
            "token": project.api_token,
            "project_id": project.id,
            "events": [
                {"event": "e", "distinct_id": f"u{n % 3}", "uuid": str(uuid.uuid4()), "properties": {"$set": {"m": m}}}
                for n in range(6)
            ],
            "ip": None,
            "now": now,
            "sent_at": None,
        }
        for m in range(2)
        for project in made
    ]
    report = ingest_messages(messages)
    assert (report.stored, report.dead_lettered) == (60, 0)
    seen: set = set()
    for project in made:
        stored = list_events(project.id, limit=100)
        assert len(stored) == 12
        persons = {event["distinct_id"]: event["person_id"] for event in stored}
        assert persons == {f"u{n}": str(person_of(project.id, f"u{n}").uuid) for n in range(3)}
        assert person_of(project.id, "u0").properties == {"m": 1}, "the project's events applied in order"
        assert not seen & set(persons.values()), "no person shared between projects"
        seen |= set(persons.values())
