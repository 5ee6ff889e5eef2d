"""The `any` lookup (pipeline/persons/lookups.py): the rows `__in` would find, in one array
parameter on PostgreSQL."""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from bklog_app.persons.models import Person, PersonDistinctId
from pipeline.persons.lookups import AnyOf  # noqa: F401 (registers the lookup)

pytestmark = pytest.mark.django_db


@pytest.fixture
def persons(project):
    made = [Person.objects.create(project=project, uuid=uuid.uuid4(), properties={"n": n}) for n in range(3)]
    for n, person in enumerate(made):
        PersonDistinctId.objects.create(project=project, distinct_id=f"user-{n}", person=person)
    return made


def test_any_finds_what_in_finds(project, persons):
    wanted = [persons[0].uuid, persons[2].uuid, uuid.uuid4()]
    assert set(Person.objects.filter(uuid__any=wanted)) == set(Person.objects.filter(uuid__in=wanted))
    found = PersonDistinctId.objects.filter(project=project, distinct_id__any=["user-1", "user-2", "nobody"])
    assert sorted(found.values_list("distinct_id", flat=True)) == ["user-1", "user-2"]
    assert not Person.objects.filter(uuid__any=[]).exists()


def test_one_array_parameter_on_postgresql(project, persons):
    with CaptureQueriesContext(connection) as queries:
        list(PersonDistinctId.objects.filter(project=project, distinct_id__any=[f"user-{n}" for n in range(50)]))
    sql = queries.captured_queries[0]["sql"]
    if connection.vendor == "postgresql":
        assert "= ANY(" in sql and sql.count("user-") == 50
    else:
        assert " IN (" in sql
