"""resolve_persons against the real database: what is stored, what each event gets."""

import uuid

import pytest
from django.db import connection

from bklog_app.persons.models import Person, PersonDistinctId, PersonOverride
from pipeline.persons.overrides import current_person_ids
from pipeline.persons.resolve import EMPTY_PERSON
from tests.persons.helpers import normalised, resolve

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_distinct_id_cache")]


def ids_of(person_uuid) -> set[str]:
    return set(PersonDistinctId.objects.filter(person_id=person_uuid).values_list("distinct_id", flat=True))


def test_new_person_is_stored(project):
    results, warnings = resolve(project.id, [normalised("pageview", "u1", 5, **{"$set": {"a": 1}})])
    person_uuid, snapshot = results[0]
    person = Person.objects.get(uuid=person_uuid)
    assert person.project_id == project.id
    assert person.properties == snapshot == {"a": 1}
    assert person.created_at.isoformat() == "2024-03-01T10:00:00.005000+00:00"
    assert not person.is_identified and person.version == 0
    assert ids_of(person_uuid) == {"u1"}
    assert warnings == []


def test_later_events_in_a_batch_see_earlier_changes(project):
    results, _ = resolve(
        project.id,
        [
            normalised("e", "u", 0, **{"$set": {"plan": "free"}, "$set_once": {"first": 1}}),
            normalised("e", "u", 1, **{"$set_once": {"first": 2, "second": 2}}),
            normalised("e", "u", 2, **{"$unset": ["second"], "$set": {"plan": "pro"}}),
        ],
    )
    assert [props for _, props in results] == [
        {"plan": "free", "first": 1},
        {"plan": "free", "first": 1, "second": 2},
        {"plan": "pro", "first": 1},
    ]
    assert len({person for person, _ in results}) == 1
    assert Person.objects.get().properties == {"plan": "pro", "first": 1}


def test_updates_across_batches_bump_the_version(project):
    (first, _), *_ = resolve(project.id, [normalised("e", "u", **{"$set": {"n": 1}})])[0]
    resolve(project.id, [normalised("e", "u", **{"$set": {"n": 2}})])
    resolve(project.id, [normalised("e", "u", **{"$set": {"n": 2}})])  # no change: no write
    person = Person.objects.get(uuid=first)
    assert person.properties == {"n": 2} and person.version == 1


def test_process_person_profile_false_touches_no_person(project):
    results, _ = resolve(
        project.id,
        [
            normalised("e", "ghost", **{"$process_person_profile": False, "$set": {"a": 1}}),
            normalised("e", "real", **{"$set": {"a": 1}}),
        ],
    )
    assert results[0] == EMPTY_PERSON == (uuid.UUID(int=0), {})
    assert results[1][1] == {"a": 1}
    assert not PersonDistinctId.objects.filter(distinct_id="ghost").exists()
    assert Person.objects.count() == 1


def test_identify_merges_two_existing_persons(project):
    (anon, _), (user, _) = resolve(
        project.id,
        [
            normalised("e", "anon", 0, **{"$set": {"a": "anon", "shared": "anon"}}),
            normalised("e", "user", 10, **{"$set": {"u": "user", "shared": "user"}}),
        ],
    )[0]
    results, warnings = resolve(
        project.id, [normalised("$identify", "user", 20, **{"$anon_distinct_id": "anon", "$set": {"e": 1}})]
    )
    assert warnings == []
    assert results[0] == (user, {"a": "anon", "u": "user", "shared": "user", "e": 1})
    person = Person.objects.get()
    assert person.uuid == user and person.is_identified
    assert person.created_at.isoformat() == "2024-03-01T10:00:00+00:00", "the earliest created_at"
    assert ids_of(user) == {"anon", "user"}
    assert not Person.objects.filter(uuid=anon).exists()


def test_refused_and_illegal_merges_warn_and_still_set(project):
    resolve(project.id, [normalised("$identify", "user-a", **{"$anon_distinct_id": "anon-a"})])
    resolve(project.id, [normalised("e", "user-b")])
    events = [
        normalised("$identify", "user-b", **{"$anon_distinct_id": "user-a", "$set": {"refused": True}}),
        normalised("$merge_dangerously", "user-b", alias="0", **{"$set": {"illegal": True}}),
    ]
    results, warnings = resolve(project.id, events)
    assert [(type_, event_uuid) for type_, event_uuid, _ in warnings] == [
        ("cannot_merge_already_identified", events[0]["uuid"]),
        ("cannot_merge_with_illegal_distinct_id", events[1]["uuid"]),
    ]
    assert warnings[1][2]["illegal_distinct_id"] == "0"
    assert results[1][1] == {"refused": True, "illegal": True}
    assert Person.objects.count() == 2
    assert not PersonDistinctId.objects.filter(distinct_id="0").exists()


def test_four_way_merge_in_one_batch_and_across_batches(project):
    initial, _ = resolve(project.id, [normalised("e", f"id-{n}", n, **{"$set": {f"p{n}": n}}) for n in range(4)])
    results, _ = resolve(
        project.id,
        [
            normalised("$create_alias", "id-1", 10, alias="id-0"),
            normalised("e", "id-0", 11),
            normalised("$merge_dangerously", "id-2", 12, alias="id-1"),
        ],
    )
    assert results[2][0] == PersonDistinctId.objects.get(distinct_id="id-2").person_id
    results2, _ = resolve(project.id, [normalised("$merge_dangerously", "id-3", 20, alias="id-0")])
    survivor = Person.objects.get()
    assert results2[0][0] == survivor.uuid
    assert survivor.properties == {"p0": 0, "p1": 1, "p2": 2, "p3": 3}
    assert ids_of(survivor.uuid) == {"id-0", "id-1", "id-2", "id-3"}
    stamped = {person for person, _ in initial + results + results2}
    assert len(stamped) == 4
    current = current_person_ids(project.id, stamped)
    assert {current.get(str(person), str(person)) for person in stamped} == {str(survivor.uuid)}
    assert PersonOverride.objects.count() == 3, "one flat row per merged-away person"


def test_merge_of_persons_created_in_the_same_batch(project):
    results, _ = resolve(
        project.id,
        [
            normalised("e", "a", 0, **{"$set": {"a": 1}}),
            normalised("e", "b", 1, **{"$set": {"b": 1}}),
            normalised("$merge_dangerously", "b", 2, alias="a"),
            normalised("e", "a", 3),
        ],
    )
    survivor = Person.objects.get()
    assert results[1][0] == results[2][0] == results[3][0] == survivor.uuid
    assert results[0][0] != survivor.uuid, "the first event keeps the person it had then"
    assert ids_of(survivor.uuid) == {"a", "b"}
    assert results[3][1] == {"a": 1, "b": 1}
    assert current_person_ids(project.id, [results[0][0]]) == {str(results[0][0]): str(survivor.uuid)}


def test_an_event_whose_person_write_fails_does_not_take_the_batch_down(project):
    """A write the database refuses (a distinct id too long for the column) fails that event
    alone; the batch falls back to one event at a time."""
    too_long = "x" * 401
    results, _ = resolve(
        project.id,
        [normalised("e", "fine-1"), normalised("e", too_long), normalised("e", "fine-2")],
    )
    assert isinstance(results[0], tuple) and isinstance(results[2], tuple)
    if connection.vendor == "postgresql":
        assert isinstance(results[1], Exception)
        assert set(PersonDistinctId.objects.values_list("distinct_id", flat=True)) == {"fine-1", "fine-2"}
    else:  # SQLite does not enforce varchar lengths
        assert isinstance(results[1], tuple)


def test_a_single_failing_event_does_not_fail_profileless_events_beside_it(project):
    results, _ = resolve(
        project.id,
        [normalised("e", "y" * 401), normalised("e", "no-profile", **{"$process_person_profile": False})],
    )
    assert results[1] == EMPTY_PERSON
    if connection.vendor == "postgresql":
        assert isinstance(results[0], Exception)
