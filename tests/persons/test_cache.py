"""The distinct_id cache: bounded, used, and never serving a merged-away or deleted person.

"Another process" is simulated by swapping in a second cache for a call: the first cache then
holds entries that another writer made stale, exactly as a second worker process would.
"""

import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

import pipeline.persons.cache as cache_module
from bklog_app.persons.models import Person
from pipeline.persons.cache import DistinctIdCache, get_cache
from pipeline.persons.state import StoredPerson
from tests.persons.helpers import normalised, resolve


def entry() -> StoredPerson:
    return StoredPerson(uuid.uuid4(), {}, datetime(2024, 1, 1, tzinfo=UTC), False, 0)


def test_lru_is_bounded_and_keeps_recently_used_entries():
    cache = DistinctIdCache(3)
    cache.put_many(1, {"a": entry(), "b": entry(), "c": entry()})
    cache.get_many(1, ["a"])
    cache.put_many(1, {"d": entry()})
    assert len(cache) == 3
    assert set(cache.get_many(1, ["a", "b", "c", "d"])) == {"a", "c", "d"}
    assert cache.get_many(2, ["a"]) == {}, "entries are per project"


def test_size_zero_caches_nothing():
    cache = DistinctIdCache(0)
    cache.put_many(1, {"a": entry()})
    assert len(cache) == 0


@pytest.fixture
def fresh_cache():
    get_cache().clear()
    yield get_cache()
    get_cache().clear()


def as_another_process(monkeypatch, project_id: int, events: list[dict]):
    own = cache_module._cache
    monkeypatch.setattr(cache_module, "_cache", DistinctIdCache(100))
    try:
        return resolve(project_id, events)
    finally:
        monkeypatch.setattr(cache_module, "_cache", own)


@pytest.mark.django_db(transaction=True)
def test_warm_cache_needs_one_version_query(project, fresh_cache):
    resolve(project.id, [normalised("e", f"u{n}", **{"$set": {"n": n}}) for n in range(20)])
    assert len(fresh_cache) == 20, "committed persons are cached after the commit"
    with CaptureQueriesContext(connection) as queries:
        results, _ = resolve(project.id, [normalised("e", f"u{n}") for n in range(20)])
    # Besides the batch's turn on PostgreSQL (BEGIN, its advisory lock, COMMIT: pipeline/persons/store.py).
    reads = [q["sql"] for q in queries if "persons_" in q["sql"]]
    assert len(reads) == 1, [q["sql"] for q in queries]
    assert "version" in reads[0] and "properties" not in reads[0]
    assert [props for _, props in results] == [{"n": n} for n in range(20)]


@pytest.mark.django_db(transaction=True)
def test_merged_away_person_is_never_served(project, fresh_cache, monkeypatch):
    (x, _), (y, _) = resolve(project.id, [normalised("e", "x"), normalised("e", "y")])[0]
    assert set(fresh_cache.get_many(project.id, ["x", "y"])) == {"x", "y"}

    as_another_process(
        monkeypatch, project.id, [normalised("$merge_dangerously", "x", alias="y", **{"$set": {"m": 1}})]
    )
    assert not Person.objects.filter(uuid=y).exists()

    results, _ = resolve(project.id, [normalised("e", "y"), normalised("e", "x")])
    assert results == [(x, {"m": 1}), (x, {"m": 1})]


@pytest.mark.django_db(transaction=True)
def test_stale_properties_are_reloaded(project, fresh_cache, monkeypatch):
    resolve(project.id, [normalised("e", "u", **{"$set": {"plan": "free"}})])
    as_another_process(monkeypatch, project.id, [normalised("e", "u", **{"$set": {"plan": "pro"}})])
    results, _ = resolve(project.id, [normalised("e", "u")])
    assert results[0][1] == {"plan": "pro"}


@pytest.mark.django_db(transaction=True)
def test_deleted_person_is_never_served(project, fresh_cache):
    (old, _), *_ = resolve(project.id, [normalised("e", "u", **{"$set": {"a": 1}})])[0]
    Person.objects.filter(uuid=old).delete()  # as the API does, in the web process
    results, _ = resolve(project.id, [normalised("e", "u")])
    new, properties = results[0]
    assert new != old and properties == {}
    assert Person.objects.get().uuid == new
