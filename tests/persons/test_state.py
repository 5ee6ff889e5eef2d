"""The in-memory rules of docs/contracts.md#persons, event by event, without a database."""

import uuid
from datetime import UTC, datetime

import pytest

from pipeline.persons.merges import CANNOT_MERGE_ALREADY_IDENTIFIED, CANNOT_MERGE_WITH_ILLEGAL_DISTINCT_ID
from pipeline.persons.state import BatchState, StoredPerson

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def stored(identified=False, created_at=T0, version=3, **properties) -> StoredPerson:
    return StoredPerson(uuid.uuid4(), properties, created_at, identified, version)


def event(name, distinct_id, ms=1_704_067_200_000, **properties) -> dict:
    return {
        "uuid": str(uuid.uuid4()),
        "event": name,
        "distinct_id": distinct_id,
        "properties": properties,
        "timestamp_ms": ms,
    }


def test_new_person_uses_the_event_timestamp_and_updates():
    state = BatchState({})
    outcome = state.apply(event("pageview", "u1", ms=1_704_067_200_123, **{"$set": {"a": 1}, "$set_once": {"b": 2}}))
    person = state.persons[outcome.person_uuid]
    assert outcome.properties == {"a": 1, "b": 2}
    assert person.created_at == datetime(2024, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)
    assert not person.is_identified
    changes = state.changes()
    assert changes.inserts == [person] and changes.new_distinct_ids == [("u1", person.uuid)]


def test_identify_neither_has_a_person():
    state = BatchState({})
    outcome = state.apply(event("$identify", "user", **{"$anon_distinct_id": "anon"}))
    assert state.person_of("user") is state.person_of("anon")
    assert state.person_of("user").is_identified
    assert outcome.warnings == ()


@pytest.mark.parametrize("existing", ["user", "anon"])
def test_identify_one_has_a_person(existing):
    person = stored(name="x")
    state = BatchState({existing: person})
    outcome = state.apply(event("$identify", "user", **{"$anon_distinct_id": "anon", "$set": {"email": "e"}}))
    assert outcome.person_uuid == person.uuid
    assert outcome.properties == {"name": "x", "email": "e"}
    assert state.person_of("user") is state.person_of("anon")
    assert state.person_of("user").is_identified
    changes = state.changes()
    assert changes.updates[0].uuid == person.uuid
    assert [distinct_id for distinct_id, _ in changes.new_distinct_ids] == ["anon" if existing == "user" else "user"]


def test_both_have_persons_merge_into_the_event_distinct_id():
    later = datetime(2024, 2, 1, tzinfo=UTC)
    into, other = stored(created_at=later, a="into", b="into"), stored(created_at=T0, a="other", c="other")
    state = BatchState({"user": into, "anon": other})
    outcome = state.apply(event("$create_alias", "user", alias="anon", **{"$set": {"b": "event"}}))
    assert outcome.person_uuid == into.uuid
    assert outcome.properties == {"a": "into", "b": "event", "c": "other"}
    survivor = state.person_of("anon")
    assert survivor.uuid == into.uuid and survivor.created_at == T0 and survivor.is_identified
    changes = state.changes()
    assert changes.deletes == {other.uuid: into.uuid}
    assert changes.expected_versions(state) == {into.uuid: 3, other.uuid: 3}


def test_identified_other_person_is_refused_but_set_applies():
    into, other = stored(), stored(identified=True)
    state = BatchState({"user": into, "anon": other})
    outcome = state.apply(event("$identify", "user", **{"$anon_distinct_id": "anon", "$set": {"k": 1}}))
    assert outcome.warnings[0][0] == CANNOT_MERGE_ALREADY_IDENTIFIED
    assert outcome.warnings[0][1] == {"event": "$identify", "distinct_id": "user", "other_distinct_id": "anon"}
    assert outcome.person_uuid == into.uuid and outcome.properties == {"k": 1}
    assert state.person_of("anon").uuid == other.uuid
    assert state.changes().deletes == {}


def test_merge_dangerously_merges_an_identified_person():
    into, other = stored(), stored(identified=True)
    state = BatchState({"user": into, "anon": other})
    outcome = state.apply(event("$merge_dangerously", "user", alias="anon"))
    assert outcome.warnings == ()
    assert state.person_of("anon").uuid == into.uuid


@pytest.mark.parametrize("other", ["0", "anonymous", '"null"', "  ", 0, False, {"a": 1}])
def test_illegal_ids_never_merge(other):
    state = BatchState({})
    outcome = state.apply(event("$merge_dangerously", "user", alias=other, **{"$set": {"k": "v"}}))
    assert outcome.warnings[0][0] == CANNOT_MERGE_WITH_ILLEGAL_DISTINCT_ID
    assert outcome.properties == {"k": "v"}
    assert state.person_of("user") is not None
    assert [distinct_id for distinct_id, _ in state.changes().new_distinct_ids] == ["user"]


def test_illegal_event_distinct_id_never_merges():
    state = BatchState({})
    outcome = state.apply(event("$identify", "undefined", **{"$anon_distinct_id": "anon-1"}))
    assert outcome.warnings[0][1]["illegal_distinct_id"] == "undefined"
    assert state.person_of("anon-1") is None


def test_same_id_is_not_a_merge():
    state = BatchState({})
    outcome = state.apply(event("$identify", "user", **{"$anon_distinct_id": "user"}))
    assert outcome.warnings == ()
    assert not state.person_of("user").is_identified


def test_chained_merges_resolve_to_one_survivor():
    a, b, c, d = stored(), stored(), stored(), stored()
    state = BatchState({"a": a, "b": b, "c": c, "d": d})
    state.apply(event("$merge_dangerously", "b", alias="a"))
    state.apply(event("$merge_dangerously", "c", alias="b"))
    outcome = state.apply(event("$merge_dangerously", "d", alias="a"))
    assert outcome.person_uuid == d.uuid
    assert {state.person_of(x).uuid for x in "abcd"} == {d.uuid}
    assert state.changes().deletes == {a.uuid: d.uuid, b.uuid: d.uuid, c.uuid: d.uuid}


def test_snapshots_are_not_changed_by_later_events():
    state = BatchState({})
    first = state.apply(event("e", "u", **{"$set": {"plan": "free"}}))
    second = state.apply(event("e", "u", **{"$set": {"plan": "pro"}}))
    assert first.properties == {"plan": "free"}
    assert second.properties == {"plan": "pro"}


def test_a_failing_event_leaves_the_state_as_before(monkeypatch):
    import pipeline.persons.state as state_module

    into, other = stored(a=1), stored(b=2)
    state = BatchState({"user": into, "anon": other})
    real_merged = state_module.merged_properties

    def broken(*args):
        raise RuntimeError("bug")

    monkeypatch.setattr(state_module, "merged_properties", broken)
    outcome = state.apply(event("$merge_dangerously", "user", alias="anon", **{"$set": {"x": 1}}))
    assert isinstance(outcome.error, RuntimeError)
    assert state.person_of("anon").uuid == other.uuid
    assert state.changes().empty

    monkeypatch.setattr(state_module, "merged_properties", real_merged)
    failed_new = BatchState({})
    monkeypatch.setattr(state_module, "initial_properties", broken)
    assert failed_new.apply(event("e", "new-id")).error is not None
    assert failed_new.person_of("new-id") is None and failed_new.changes().empty


def test_a_failure_after_some_changes_undoes_them(monkeypatch):
    import pipeline.persons.state as state_module

    other = stored(b=2)
    state = BatchState({"anon": other})

    def broken(*args):
        raise RuntimeError("bug")

    monkeypatch.setattr(state_module, "apply_updates", broken)
    outcome = state.apply(event("$identify", "user", **{"$anon_distinct_id": "anon", "$set": {"x": 1}}))
    assert isinstance(outcome.error, RuntimeError)
    assert state.person_of("user") is None
    assert not state.person_of("anon").is_identified
    assert state.changes().empty
