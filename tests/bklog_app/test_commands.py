"""The management commands operators script against."""

import json
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from bklog_app.models import Membership, Organization, PersonalAPIKey, Project

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_project_json_creates_the_organization():
    result = json.loads(run("create_project", "shop", "--org", "Acme", "--json"))
    project = Project.objects.get(id=result["id"])
    assert project.api_token == result["token"]
    assert project.organization.name == "Acme"


def test_create_project_get_or_create_reuses():
    first = json.loads(run("create_project", "demo", "--get-or-create", "--json"))
    again = json.loads(run("create_project", "demo", "--get-or-create", "--json"))
    assert first == again
    assert Organization.objects.get(name="Default").projects.count() == 1


def test_create_api_key_json_makes_a_working_key(client):
    project = Project.objects.get(id=json.loads(run("create_project", "p", "--org", "Acme", "--json"))["id"])
    key = json.loads(run("create_api_key", "alice", "--org", "Acme", "--json"))["key"]
    user = get_user_model().objects.get(username="alice")
    assert Membership.objects.filter(user=user, organization__name="Acme").exists()
    assert PersonalAPIKey.objects.filter(user=user, key_hash=PersonalAPIKey.hash_key(key)).exists()
    response = client.get(f"/api/projects/{project.id}/events/", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200


def test_create_api_key_staff_flag():
    run("create_api_key", "root", "--staff", "--json")
    assert get_user_model().objects.get(username="root").is_staff


def test_migrate_clickhouse_is_idempotent():
    assert "up to date" in run("migrate_clickhouse")
    assert "(0 applied)" in run("migrate_clickhouse")
