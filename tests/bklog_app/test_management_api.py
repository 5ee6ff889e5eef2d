"""The management API: organizations and roles, keys, projects, token rotation, dead letters,
ingestion warnings."""

import uuid

import orjson
import pytest
from django.db import connection
from rest_framework.test import APIClient

from bklog_app.models import DeadLetter, IngestionWarning, Membership, Organization, Project
from pipeline.ingestion.batch import ingest_messages
from tests.factories import assert_no_more_events, make_project, make_user_with_key, wait_for_events

pytestmark = pytest.mark.django_db


def client_with(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def admin(project):
    user, key = make_user_with_key(None)
    Membership.objects.create(organization=project.organization, user=user, role="admin")
    return client_with(key)


def test_organization_created_by_a_user_makes_them_admin():
    _, key = make_user_with_key(None)
    client = client_with(key)
    response = client.post("/api/organizations/", {"name": "Acme"}, format="json")
    assert response.status_code == 201
    assert response.json()["role"] == "admin"
    assert [o["name"] for o in client.get("/api/organizations/").json()["results"]] == ["Acme"]


def test_members_cannot_manage_admins_can(api_client, admin, project):
    other, _ = make_user_with_key(None)
    url = f"/api/organizations/{project.organization_id}/members/"
    denied = api_client.post(url, {"username": other.username, "role": "member"}, format="json")
    assert denied.status_code == 403
    assert denied.json()["type"] == "authentication_error"
    assert admin.post(url, {"username": other.username, "role": "member"}, format="json").status_code == 201
    assert admin.post(url, {"username": "nobody-here"}, format="json").json()["attr"] == "username"


def test_keys_are_shown_once_and_revocable():
    _, key = make_user_with_key(None)
    client = client_with(key)
    created = client.post("/api/keys/", {"label": "ci"}, format="json").json()
    assert created["key"].startswith("bkl_")
    listed = client.get("/api/keys/").json()["results"]
    assert all("key" not in item for item in listed)
    new_client = client_with(created["key"])
    assert new_client.get("/api/keys/").status_code == 200
    assert client.delete(f"/api/keys/{created['id']}/").status_code == 204
    assert new_client.get("/api/keys/").status_code == 401


def test_project_crud_by_admin(admin, api_client, project):
    created = admin.post("/api/projects/", {"organization": project.organization_id, "name": "web"}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["api_token"].startswith("phc_")
    assert (
        api_client.post(
            "/api/projects/", {"organization": project.organization_id, "name": "x"}, format="json"
        ).status_code
        == 403
    )
    patched = admin.patch(
        f"/api/projects/{body['id']}/", {"rate_limit_per_minute": 100, "anonymize_ips": True}, format="json"
    )
    assert patched.json()["rate_limit_per_minute"] == 100
    assert admin.delete(f"/api/projects/{body['id']}/").status_code == 204
    assert not Project.objects.filter(id=body["id"]).exists()


def test_cannot_create_a_project_in_someone_elses_organization(admin):
    foreign = Organization.objects.create(name="foreign")
    response = admin.post("/api/projects/", {"organization": foreign.id, "name": "x"}, format="json")
    assert response.status_code == 400
    assert response.json()["attr"] == "organization"


@pytest.mark.django_db(transaction=True)
def test_rotated_token_stops_working_at_once(client, project):
    user, key = make_user_with_key(None)
    Membership.objects.create(organization=project.organization, user=user, role="admin")
    old = project.api_token
    event = {"event": "e", "distinct_id": "d"}
    assert client.post(f"/e/?token={old}", data=orjson.dumps(event), content_type="application/json").status_code == 200
    new = client_with(key).post(f"/api/projects/{project.id}/rotate_token/").json()["api_token"]
    assert new != old
    assert client.post(f"/e/?token={old}", data=orjson.dumps(event), content_type="application/json").status_code == 401
    assert client.post(f"/e/?token={new}", data=orjson.dumps(event), content_type="application/json").status_code == 200


def _dead_letter(project, **payload) -> DeadLetter:
    message = {"id": str(uuid.uuid4()), "token": project.api_token, "project_id": project.id, "ip": None,
               "now": "2024-06-01T00:00:00.000+00:00", "sent_at": None, "events": [payload]}  # fmt: skip
    ingest_messages([message])
    return DeadLetter.objects.filter(project=project).latest("id")


def test_dead_letters_list_filter_delete(api_client, project):
    letter = _dead_letter(project, event="broken", properties={})
    url = f"/api/projects/{project.id}/dead_letters/"
    listed = api_client.get(url, {"kind": "event"}).json()
    assert [item["id"] for item in listed["results"]] == [letter.id]
    assert api_client.get(url, {"kind": "job"}).json()["results"] == []
    assert api_client.get(f"{url}{letter.id}/").json()["payload"] == {"event": "broken", "properties": {}}
    assert api_client.delete(f"{url}{letter.id}/").status_code == 204
    assert not DeadLetter.objects.filter(id=letter.id).exists()


@pytest.mark.django_db(transaction=True)
def test_replayed_dead_letters_are_stored_once(project, celery_worker):
    _, key = make_user_with_key(project.organization)
    client = client_with(key)
    letters = [_dead_letter(project, event="fixed", properties={"n": n}) for n in range(3)]
    # The cause is fixed (here: the missing distinct_id is supplied), then the letters replayed.
    for letter in letters:
        letter.payload = {**letter.payload, "distinct_id": "now-known"}
        letter.save()
    url = f"/api/projects/{project.id}/dead_letters/"
    assert client.post(f"{url}{letters[0].id}/replay/").json() == {"replayed": 1}
    assert client.post(f"{url}replay/", {"ids": [letter.id for letter in letters]}, format="json").json() == {
        "replayed": 2
    }
    stored = wait_for_events(project.id, 3)
    assert sorted(e["properties"]["n"] for e in stored) == [0, 1, 2]
    # replaying again (already replayed, or forced by id) stores nothing twice
    client.post(f"{url}{letters[0].id}/replay/")
    assert_no_more_events(project.id, 3)


def test_ingestion_warnings_list_and_filter(api_client, project):
    IngestionWarning.objects.create(project=project, type="event_timestamp_in_future", event_uuid="u1", details={})
    IngestionWarning.objects.create(
        project=project, type="cannot_merge_already_identified", event_uuid="u2", details={}
    )
    url = f"/api/projects/{project.id}/ingestion_warnings/"
    assert len(api_client.get(url).json()["results"]) == 2
    assert [w["event_uuid"] for w in api_client.get(url, {"type": "event_timestamp_in_future"}).json()["results"]] == [
        "u1"
    ]


def test_a_filter_with_a_nul_character_is_400_or_matches_nothing(api_client, project):
    """PostgreSQL's text cannot hold U+0000 and refuses a query that compares with it: a 400 that
    says so, not a 500. SQLite compares, and finds nothing."""
    IngestionWarning.objects.create(project=project, type="event_timestamp_in_future", event_uuid="u1", details={})
    response = api_client.get(f"/api/projects/{project.id}/ingestion_warnings/", {"type": "event\x00"})
    if connection.vendor == "postgresql":
        assert response.status_code == 400, response.content
        assert response.json() == {
            "type": "validation_error",
            "code": "invalid_input",
            "detail": "A parameter or field contains a NUL character (\\u0000), which no stored value can hold; "
            "remove it.",
            "attr": None,
        }
    else:
        assert response.status_code == 200, response.content
        assert response.json()["results"] == []


def test_other_organizations_resources_are_404(project):
    letter = _dead_letter(project, event="broken", properties={})
    outsider = client_with(make_user_with_key(make_project().organization)[1])
    for url in (
        f"/api/projects/{project.id}/",
        f"/api/projects/{project.id}/dead_letters/",
        f"/api/projects/{project.id}/dead_letters/{letter.id}/",
        f"/api/projects/{project.id}/ingestion_warnings/",
        f"/api/organizations/{project.organization_id}/",
        f"/api/organizations/{project.organization_id}/members/",
    ):
        assert outsider.get(url).status_code == 404, url
    assert outsider.post(f"/api/projects/{project.id}/rotate_token/").status_code == 404
