"""The management commands operators script against."""

import json
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

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


def test_create_project_says_who_becomes_the_new_organizations_admin():
    assert "its first user becomes its admin (manage.py create_api_key USERNAME --org 'Acme')" in run(
        "create_project", "shop", "--org", "Acme"
    )
    assert "first user" not in run("create_project", "web", "--org", "Acme")
    assert not Organization.objects.get(name="Acme").memberships.exists()


def test_create_api_key_the_first_user_of_an_organization_is_its_admin():
    run("create_project", "shop", "--org", "Acme", "--json")
    roles = [json.loads(run("create_api_key", name, "--org", "Acme", "--json"))["role"] for name in ("a", "b")]
    assert roles == ["admin", "member"]
    assert json.loads(run("create_api_key", "new-org-user", "--org", "Fresh", "--json"))["role"] == "admin"


def test_create_api_key_role_sets_the_role():
    run("create_api_key", "alice", "--org", "Acme", "--json")
    assert json.loads(run("create_api_key", "bob", "--org", "Acme", "--role", "admin", "--json"))["role"] == "admin"
    assert json.loads(run("create_api_key", "alice", "--org", "Acme", "--role", "member", "--json"))["role"] == "member"
    assert "bob, admin of Acme (shown once): bkl_" in run("create_api_key", "bob", "--org", "Acme")
    assert Membership.objects.get(user__username="alice").role == "member"


def test_create_api_key_again_keeps_an_existing_members_role():
    run("create_api_key", "alice", "--org", "Acme", "--json")
    run("create_api_key", "bob", "--org", "Acme", "--json")
    assert json.loads(run("create_api_key", "bob", "--org", "Acme", "--json"))["role"] == "member"
    assert json.loads(run("create_api_key", "alice", "--org", "Acme", "--json"))["role"] == "admin"
    assert PersonalAPIKey.objects.filter(user__username="alice").count() == 2


def test_create_api_key_promotes_a_member_of_an_organization_without_admin():
    organization = Organization.objects.create(name="Legacy")
    user = get_user_model().objects.create(username="carol")
    Membership.objects.create(organization=organization, user=user, role="member")
    assert json.loads(run("create_api_key", "carol", "--org", "Legacy", "--json"))["role"] == "admin"


def test_create_api_key_refuses_to_demote_the_last_admin():
    run("create_api_key", "alice", "--org", "Acme", "--json")
    with pytest.raises(CommandError) as refused:
        run("create_api_key", "alice", "--org", "Acme", "--role", "member", "--json")
    assert str(refused.value) == (
        "This is the last admin of Acme: an organization always has an admin. Make another member an admin first."
    )
    assert Membership.objects.get(user__username="alice").role == "admin"
    assert PersonalAPIKey.objects.filter(user__username="alice").count() == 1


def test_create_api_key_role_must_be_admin_or_member():
    with pytest.raises(CommandError) as refused:
        run("create_api_key", "alice", "--org", "Acme", "--role", "owner")
    assert str(refused.value).startswith("Error: argument --role: invalid choice: 'owner'")
    assert not get_user_model().objects.filter(username="alice").exists()
