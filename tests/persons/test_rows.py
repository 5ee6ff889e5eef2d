"""pipeline/persons/rows.py on both databases: what goes into the bulk statements' arrays comes
back as it went in, whatever the characters (on PostgreSQL the arrays are bound in binary)."""

import pytest

from bklog_app.persons.models import Person, PersonDistinctId
from pipeline.persons.cache import get_cache
from tests.persons.helpers import normalised, resolve

pytestmark = pytest.mark.django_db(transaction=True)

AWKWARD_IDS = [
    "plain",
    "it's",
    'say "hi"',
    "back\\slash",
    "{braces}",
    "a,b",
    "NULL",
    " spaced ",
    "ünïcödé 用户 🦔",
    "x" * 200,
]


def test_awkward_distinct_ids_and_properties_are_written_and_read_back_as_they_are(project):
    first, warnings = resolve(
        project.id, [normalised("e", did, **{"$set": {"name": did, "quote": "'\"\\"}}) for did in AWKWARD_IDS]
    )
    assert warnings == []
    stored = dict(PersonDistinctId.objects.filter(project=project).values_list("distinct_id", "person_id"))
    assert sorted(stored) == sorted(AWKWARD_IDS)
    for did, (person_id, properties) in zip(AWKWARD_IDS, first, strict=True):
        assert stored[did] == person_id
        assert properties == {"name": did, "quote": "'\"\\"}
        assert Person.objects.get(uuid=person_id).properties == properties

    get_cache().clear()  # read from the database, not this process's cache
    again, _ = resolve(project.id, [normalised("e", did, **{"$set": {"seen": 2}}) for did in AWKWARD_IDS])
    assert [person_id for person_id, _ in again] == [person_id for person_id, _ in first]
    assert [properties for _, properties in again] == [{**p, "seen": 2} for _, p in first]
    assert Person.objects.get(uuid=again[3][0]).properties == {"name": "back\\slash", "quote": "'\"\\", "seen": 2}
