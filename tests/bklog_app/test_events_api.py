"""GET /api/projects/<id>/events/: filters, newest first, keyset pages, and who may read."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from rest_framework.test import APIClient

from bklog_app.models import PersonalAPIKey
from pipeline.ingestion.batch import ingest_messages
from tests.factories import api_client_for, make_project, make_user_with_key

pytestmark = pytest.mark.django_db


def store(project, events):
    message = {"id": str(uuid.uuid4()), "token": project.api_token, "project_id": project.id, "ip": None,
               "now": "2024-06-01T12:00:00.000+00:00", "sent_at": None, "events": events}  # fmt: skip
    assert ingest_messages([message]).stored == len(events)


@pytest.fixture
def stored(project):
    events = [
        {"event": "view" if i % 2 else "click", "distinct_id": f"u{i % 3}", "uuid": str(uuid.uuid4()),
         "timestamp": f"2024-06-01T10:00:{i:02d}.{i:03d}Z", "properties": {"i": i}}
        for i in range(10)
    ]  # fmt: skip
    store(project, events)
    return events


def test_newest_first_with_every_field(api_client, project, stored):
    response = api_client.get(f"/api/projects/{project.id}/events/")
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["properties"]["i"] for r in results] == list(range(9, -1, -1))
    first = results[0]
    assert set(first) == {"uuid", "event", "distinct_id", "properties", "timestamp", "created_at", "person_id",
                          "person_properties", "elements_chain"}  # fmt: skip
    assert first["timestamp"] == "2024-06-01T10:00:09.009Z"
    assert first["created_at"].endswith("Z") and len(first["created_at"]) == 24
    assert response.json()["next"] is None


def test_filters(api_client, project, stored):
    url = f"/api/projects/{project.id}/events/"
    assert {r["event"] for r in api_client.get(url, {"event": "view"}).json()["results"]} == {"view"}
    assert {r["distinct_id"] for r in api_client.get(url, {"distinct_id": "u1"}).json()["results"]} == {"u1"}
    window = api_client.get(url, {"after": "2024-06-01T10:00:03Z", "before": "2024-06-01T10:00:06Z"}).json()["results"]
    assert [r["properties"]["i"] for r in window] == [5, 4, 3]


def test_pagination_follows_next_until_the_end(api_client, project, stored):
    seen, url = [], f"/api/projects/{project.id}/events/?limit=3"
    while url:
        page = api_client.get(url).json()
        seen += [r["properties"]["i"] for r in page["results"]]
        url = page["next"]
    assert seen == list(range(9, -1, -1))


def test_bad_query_parameters_are_400(api_client, project):
    response = api_client.get(f"/api/projects/{project.id}/events/", {"after": "not a time"})
    assert response.status_code == 400
    assert response.json()["attr"] == "after"
    assert response.json()["type"] == "validation_error"
    assert api_client.get(f"/api/projects/{project.id}/events/", {"limit": 0}).status_code == 400
    assert api_client.get(f"/api/projects/{project.id}/events/", {"cursor": "@@@"}).status_code == 400


def test_no_key_is_401(project):
    response = APIClient().get(f"/api/projects/{project.id}/events/")
    assert response.status_code == 401
    assert response.json()["type"] == "authentication_error"


def test_unknown_or_revoked_key_is_401(project):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer bkl_nope")
    assert client.get(f"/api/projects/{project.id}/events/").status_code == 401
    user, key = make_user_with_key(project.organization)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get(f"/api/projects/{project.id}/events/").status_code == 200
    PersonalAPIKey.objects.filter(user=user).update(revoked_at="2024-01-01T00:00:00Z")
    assert client.get(f"/api/projects/{project.id}/events/").status_code == 401


def test_member_of_another_organization_gets_404(project, stored):
    outsider = api_client_for(make_project().organization)
    response = outsider.get(f"/api/projects/{project.id}/events/")
    assert response.status_code == 404
    assert outsider.get("/api/projects/999999999/events/").status_code == 404


def test_key_records_last_use(project):
    user, key = make_user_with_key(project.organization)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    client.get(f"/api/projects/{project.id}/events/")
    assert PersonalAPIKey.objects.get(user=user).last_used_at is not None
    assert PersonalAPIKey.objects.get(user=user).key_hash != key


def test_pages_follow_next_across_days_and_years(api_client, project):
    """The events API reads the newest day first and older windows only while a page is not
    full; a `next` link still leads through every event, newest first, filters kept."""
    now = datetime.now(UTC)
    ages = [timedelta(0), timedelta(hours=1), timedelta(days=1), timedelta(days=9), timedelta(days=400)]
    events = [
        {"event": "view", "distinct_id": f"u{i % 2}", "uuid": str(uuid.uuid4()), "properties": {"i": i},
         "timestamp": (now - age - timedelta(milliseconds=i)).isoformat()}
        for i, age in enumerate(ages * 2)
    ]  # fmt: skip
    message = {"id": str(uuid.uuid4()), "token": project.api_token, "project_id": project.id, "ip": None,
               "now": now.isoformat(), "sent_at": None, "events": events}  # fmt: skip
    assert ingest_messages([message]).stored == len(events)
    newest_first = [e["properties"]["i"] for e in sorted(events, key=lambda e: e["timestamp"], reverse=True)]
    for query, want in (("limit=2", newest_first), ("limit=1&distinct_id=u1", [i for i in newest_first if i % 2])):
        seen, url = [], f"/api/projects/{project.id}/events/?{query}"
        while url:
            page = api_client.get(url).json()
            seen += [r["properties"]["i"] for r in page["results"]]
            url = page["next"]
        assert seen == want
