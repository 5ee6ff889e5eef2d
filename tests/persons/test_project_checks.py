"""The persons tables name their project without a foreign key constraint: the database checks it
once per statement instead of once per row (bklog_app/persons/migrations/0003). These are the
guarantees the constraint gave, on the database the tests run on."""

import uuid
from types import SimpleNamespace

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from bklog_app.models import Project
from bklog_app.persons.models import Person, PersonDistinctId
from pipeline.persons import rows
from tests.factories import make_project
from tests.persons.helpers import Blocked

pytestmark = pytest.mark.django_db(transaction=True)

MISSING_PROJECT = 987_654_321


def test_a_person_of_a_project_that_does_not_exist_is_refused():
    with pytest.raises(IntegrityError, match="project"), transaction.atomic():
        Person.objects.create(project_id=MISSING_PROJECT)
    assert not Person.objects.filter(project_id=MISSING_PROJECT).exists()


def test_a_distinct_id_of_a_project_that_does_not_exist_is_refused():
    person = Person.objects.create(project=make_project())
    with pytest.raises(IntegrityError, match="project"), transaction.atomic():
        PersonDistinctId.objects.create(project_id=MISSING_PROJECT, distinct_id="nobody", person=person)


def test_moving_a_person_to_a_project_that_does_not_exist_is_refused():
    person = Person.objects.create(project=make_project())
    with pytest.raises(IntegrityError, match="project"), transaction.atomic():
        Person.objects.filter(pk=person.pk).update(project_id=MISSING_PROJECT)


def test_one_batch_insert_with_one_missing_project_is_refused_whole():
    project = make_project()
    people = [Person(project_id=project.id), Person(project_id=MISSING_PROJECT), Person(project_id=project.id)]
    with pytest.raises(IntegrityError, match="project"), transaction.atomic():
        Person.objects.bulk_create(people)
    assert not Person.objects.filter(project=project).exists()


def test_deleting_a_project_deletes_its_persons():
    project = make_project()
    person = Person.objects.create(project=project)
    PersonDistinctId.objects.create(project=project, distinct_id="someone", person=person)
    project.delete()
    assert not Person.objects.filter(pk=person.pk).exists()
    assert not PersonDistinctId.objects.filter(distinct_id="someone").exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="on SQLite the persons go with the project")
def test_deleting_a_project_row_that_persons_still_name_is_refused():
    project = make_project()
    Person.objects.create(project=project)
    with pytest.raises(IntegrityError, match="persons"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM bklog_app_project WHERE id = %s", [project.id])
    assert Project.objects.filter(pk=project.pk).exists()


@pytest.mark.skipif(connection.vendor != "sqlite", reason="on PostgreSQL the deletion is refused")
def test_deleting_a_project_row_deletes_the_persons_that_name_it():
    """SQLite has no deferred triggers, and Django empties a SQLite database with a DELETE per
    table in any order: the persons go with their project, as an ON DELETE CASCADE would."""
    project = make_project()
    person = Person.objects.create(project=project)
    PersonDistinctId.objects.create(project=project, distinct_id="someone", person=person)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM bklog_app_project WHERE id = %s", [project.id])
    assert not Person.objects.filter(pk=person.pk).exists()
    assert not PersonDistinctId.objects.filter(distinct_id="someone").exists()


def test_the_ingestion_writes_check_their_project():
    """The statements ingestion writes new persons and distinct ids with (pipeline/persons/rows.py)."""
    project = make_project()
    person = SimpleNamespace(uuid=uuid.uuid4(), properties={}, created_at=timezone.now(), is_identified=False)
    with transaction.atomic():
        rows.insert([(project.id, person)])
        rows.insert_distinct_ids([(project.id, "first", person.uuid)])
    assert PersonDistinctId.objects.get(distinct_id="first").person_id == person.uuid
    gone = SimpleNamespace(uuid=uuid.uuid4(), properties={}, created_at=timezone.now(), is_identified=False)
    with pytest.raises(IntegrityError, match="project"), transaction.atomic():
        rows.insert([(MISSING_PROJECT, gone)])
    with pytest.raises(IntegrityError, match="project"), transaction.atomic():
        rows.insert_distinct_ids([(MISSING_PROJECT, "second", person.uuid)])


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite has one writer at a time")
def test_a_project_deleted_while_a_batch_writes_its_persons_keeps_them_and_itself(test_database_url):
    """As under a foreign key: the batch's check locks the project until the batch commits, so the
    deletion waits for it, then finds the new persons and fails; nothing is left orphaned."""
    project = make_project()
    url = test_database_url
    with psycopg.connect(url) as batch:
        batch.execute("INSERT INTO persons_person (uuid, project_id, properties, created_at, is_identified, version)"
                      " VALUES (%s, %s, '{}', now(), false, 0)", [uuid.uuid4(), project.id])  # fmt: skip
        deleting = Blocked(url, "DELETE FROM bklog_app_project WHERE id = %s", [project.id])
        assert deleting.waits(), "the deletion did not wait for the batch's lock on the project"
        batch.commit()
        error = deleting.outcome()
    assert isinstance(error, psycopg.errors.ForeignKeyViolation), error
    assert Project.objects.filter(pk=project.pk).exists()
    assert Person.objects.filter(project=project).count() == 1
