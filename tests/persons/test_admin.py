"""The persons admin shows persons and their distinct ids, and changes nothing."""

import pytest
from django.contrib.auth import get_user_model

from bklog_app.persons.models import PersonDistinctId
from tests.persons.helpers import normalised, resolve

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


def test_persons_are_listed_and_shown_read_only(admin_client, project):
    resolve(project.id, [normalised("$identify", "user", **{"$anon_distinct_id": "anon", "$set": {"a": 1}})])
    person_id = PersonDistinctId.objects.get(distinct_id="user").person_id

    listing = admin_client.get("/admin/persons/person/")
    assert listing.status_code == 200 and str(person_id) in listing.content.decode()
    page = admin_client.get(f"/admin/persons/person/{person_id}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "anon" in html and 'name="_save"' not in html
    assert admin_client.get("/admin/persons/person/add/").status_code == 403
    assert admin_client.post(f"/admin/persons/person/{person_id}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.get("/admin/persons/persondistinctid/").status_code == 200
