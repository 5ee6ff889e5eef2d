"""A distinct id names its person without a foreign key constraint: the database checks the
person once per statement, and does not lock the persons the same transaction created
(bklog_app/persons/migrations/0004). These are the guarantees the constraint gave, on the
database the tests run on."""

import uuid
from types import SimpleNamespace

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from bklog_app.persons.models import Person, PersonDistinctId
from pipeline.persons import rows
from pipeline.uuids import uuid7
from tests.factories import make_project
from tests.persons.helpers import Blocked

pytestmark = pytest.mark.django_db(transaction=True)

_NAME = "INSERT INTO persons_persondistinctid (project_id, distinct_id, person_id) VALUES (%s, %s, %s)"
_DELETE = "DELETE FROM persons_person WHERE uuid = %s"


def _person_with_id(distinct_id: str) -> Person:
    project = make_project()
    person = Person.objects.create(project=project)
    PersonDistinctId.objects.create(project=project, distinct_id=distinct_id, person=person)
    return person


def test_a_distinct_id_of_a_person_that_does_not_exist_is_refused():
    project = make_project()
    with pytest.raises(IntegrityError, match="person"), transaction.atomic():
        PersonDistinctId.objects.create(project=project, distinct_id="nobody", person_id=uuid.uuid4())
    assert not PersonDistinctId.objects.filter(distinct_id="nobody").exists()


def test_moving_a_distinct_id_to_a_person_that_does_not_exist_is_refused():
    person = _person_with_id("someone")
    with pytest.raises(IntegrityError, match="person"), transaction.atomic():
        PersonDistinctId.objects.filter(distinct_id="someone").update(person_id=uuid.uuid4())
    assert PersonDistinctId.objects.get(distinct_id="someone").person_id == person.uuid


def test_one_ingestion_insert_naming_one_missing_person_is_refused_whole():
    person = _person_with_id("first")
    pairs = sorted([(person.project_id, "second", person.uuid), (person.project_id, "third", uuid.uuid4())])
    with pytest.raises(IntegrityError, match="person"), transaction.atomic():
        rows.insert_distinct_ids(pairs)
    assert list(PersonDistinctId.objects.values_list("distinct_id", flat=True)) == ["first"]


def test_the_ingestion_writes_name_new_and_existing_persons():
    """A new person and its distinct id in one transaction (a person the check need not lock), and
    a new distinct id for a person committed before (one it locks)."""
    existing = _person_with_id("known")
    new = SimpleNamespace(uuid=uuid7(), properties={}, created_at=timezone.now(), is_identified=False)
    with transaction.atomic():
        rows.insert([(existing.project_id, new)])
        rows.insert_distinct_ids(
            sorted([(existing.project_id, "new", new.uuid), (existing.project_id, "alias", existing.uuid)])
        )
    named = dict(PersonDistinctId.objects.values_list("distinct_id", "person_id"))
    assert named == {"known": existing.uuid, "new": new.uuid, "alias": existing.uuid}


def test_deleting_a_person_deletes_its_distinct_ids():
    person = _person_with_id("someone")
    person.delete()
    assert not PersonDistinctId.objects.filter(distinct_id="someone").exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="on SQLite the distinct ids go with the person")
def test_deleting_a_person_row_that_distinct_ids_still_name_is_refused():
    person = _person_with_id("someone")
    with pytest.raises(IntegrityError, match="distinct ids"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_DELETE, [person.uuid])
    assert Person.objects.filter(pk=person.pk).exists()


@pytest.mark.skipif(connection.vendor != "sqlite", reason="on PostgreSQL the deletion is refused")
def test_deleting_a_person_row_deletes_the_distinct_ids_that_name_it():
    """As a deleted project's persons go with it on SQLite (migration 0003 says why)."""
    person = _person_with_id("someone")
    with connection.cursor() as cursor:
        cursor.execute(_DELETE, [person.uuid.hex])
    assert not PersonDistinctId.objects.filter(distinct_id="someone").exists()


def test_a_person_with_distinct_ids_keeps_its_uuid():
    person = _person_with_id("someone")
    with pytest.raises(IntegrityError, match="uuid"), transaction.atomic():
        Person.objects.filter(pk=person.pk).update(uuid=uuid.uuid4())
    assert PersonDistinctId.objects.get(distinct_id="someone").person_id == person.uuid


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite has one writer at a time")
def test_a_person_deleted_while_a_batch_names_it_keeps_it_and_its_new_distinct_id(test_database_url):
    """The check locks a person the batch did not create until the batch commits: the deletion
    waits, then finds the new distinct id and fails."""
    person = _person_with_id("known")
    with psycopg.connect(test_database_url) as batch:
        batch.execute(_NAME, [person.project_id, "alias", person.uuid])
        deleting = Blocked(test_database_url, _DELETE, [person.uuid])
        assert deleting.waits(), "the deletion did not wait for the batch's lock on the person"
        batch.commit()
        error = deleting.outcome()
    assert isinstance(error, psycopg.errors.ForeignKeyViolation), error
    assert PersonDistinctId.objects.get(distinct_id="alias").person_id == person.uuid


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite has one writer at a time")
def test_a_batch_naming_a_person_being_deleted_fails_once_the_deletion_commits(test_database_url):
    """The check waits for the deletion's lock on the person, then finds it gone."""
    person = _person_with_id("known")
    with psycopg.connect(test_database_url) as deleter:
        deleter.execute("DELETE FROM persons_persondistinctid WHERE person_id = %s", [person.uuid])
        deleter.execute(_DELETE, [person.uuid])
        naming = Blocked(test_database_url, _NAME, [person.project_id, "alias", person.uuid])
        assert naming.waits(), "the batch's check did not wait for the deletion's lock on the person"
        deleter.commit()
        error = naming.outcome()
    assert isinstance(error, psycopg.errors.ForeignKeyViolation), error
    assert not PersonDistinctId.objects.filter(distinct_id="alias").exists()
