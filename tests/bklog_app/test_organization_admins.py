"""An organization always has an admin (bklog_app/memberships.py): the README's CLI flow leaves
its first user admin, able to rotate a project token through the API; the members API refuses to
demote or remove the last admin."""

import http.client
import json
import subprocess
import sys
from io import StringIO

import orjson
import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from bklog_app.models import Membership, Project
from tests.conftest import ROOT, process_env
from tests.factories import make_user_with_key
from tests.ops.processes import GunicornProcess

LAST_ADMIN = {
    "type": "invalid_request",
    "code": "last_admin",
    "detail": "This is the last admin of Acme: an organization always has an admin. "
    "Make another member an admin first.",
    "attr": None,
}


def client_with(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def run(*args: str) -> dict:
    out = StringIO()
    call_command(*args, stdout=out)
    return json.loads(out.getvalue())


def manage(env: dict[str, str], *args: str) -> dict:
    """`.venv/bin/python manage.py ...` as the README writes it, in a process of its own."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def rotate(key: str, project_id: int):
    return client_with(key).post(f"/api/projects/{project_id}/rotate_token/")


@pytest.mark.django_db
def test_the_readme_flow_leaves_the_first_user_admin_able_to_rotate_the_token():
    project = run("create_project", "shop", "--org", "Acme", "--json")
    alice = run("create_api_key", "alice", "--org", "Acme", "--json")
    bob = run("create_api_key", "bob", "--org", "Acme", "--json")
    assert (alice["role"], bob["role"]) == ("admin", "member")
    rotated = rotate(alice["key"], project["id"])
    assert rotated.status_code == 200, rotated.content
    assert rotated.json()["api_token"] not in (project["token"], "")
    assert Project.objects.get(id=project["id"]).api_token == rotated.json()["api_token"]
    refused = rotate(bob["key"], project["id"])
    assert refused.status_code == 403
    assert refused.json() == {
        "type": "authentication_error",
        "code": "permission_denied",
        "detail": "Only an admin of this organization can do this. Ask one of its admins.",
        "attr": None,
    }


@pytest.mark.django_db(transaction=True)
def test_the_readme_flow_as_commands_in_a_shell_then_through_gunicorn(test_database_url):
    env = process_env(test_database_url, LOG_LEVEL="WARNING", CONSUL_ENABLED="false")
    project = manage(env, "create_project", "shop", "--org", "Acme", "--json")
    alice = manage(env, "create_api_key", "alice", "--org", "Acme", "--json")
    assert alice["role"] == "admin"
    web = GunicornProcess(env).start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)
        connection.request(
            "POST", f"/api/projects/{project['id']}/rotate_token/", headers={"Authorization": f"Bearer {alice['key']}"}
        )
        response = connection.getresponse()
        body = response.read()
        connection.close()
    finally:
        web.stop()
    assert response.status == 200, (body, web.tail())
    assert orjson.loads(body)["api_token"] != project["token"]


@pytest.fixture
def acme(db):
    """Acme with alice as its only admin and bob as a member; clients for both."""
    run("create_project", "shop", "--org", "Acme", "--json")
    alice, bob = (run("create_api_key", name, "--org", "Acme", "--json") for name in ("alice", "bob"))
    members = {m.user.username: m for m in Membership.objects.filter(organization__name="Acme").select_related("user")}
    url = f"/api/organizations/{members['alice'].organization_id}/members/"
    return {"alice": client_with(alice["key"]), "bob": client_with(bob["key"]), "members": members, "url": url}


def test_the_last_admin_cannot_be_demoted(acme):
    url = f"{acme['url']}{acme['members']['alice'].id}/"
    for method in ("patch", "put"):
        response = getattr(acme["alice"], method)(url, {"username": "alice", "role": "member"}, format="json")
        assert response.status_code == 409, method
        assert response.json() == LAST_ADMIN
    assert Membership.objects.get(id=acme["members"]["alice"].id).role == "admin"
    unchanged = acme["alice"].patch(url, {"username": "alice"}, format="json")
    assert unchanged.status_code == 200 and unchanged.json()["role"] == "admin"


def test_the_last_admin_cannot_be_removed(acme):
    response = acme["alice"].delete(f"{acme['url']}{acme['members']['alice'].id}/")
    assert response.status_code == 409
    assert response.json() == LAST_ADMIN
    assert Membership.objects.filter(id=acme["members"]["alice"].id).exists()


def test_an_admin_steps_down_once_another_admin_exists(acme):
    alice_url = f"{acme['url']}{acme['members']['alice'].id}/"
    bob_url = f"{acme['url']}{acme['members']['bob'].id}/"
    assert acme["alice"].patch(bob_url, {"role": "admin"}, format="json").json()["role"] == "admin"
    assert acme["alice"].patch(alice_url, {"role": "member"}, format="json").json()["role"] == "member"
    response = acme["bob"].delete(bob_url)
    assert response.status_code == 409
    assert response.json() == LAST_ADMIN
    assert acme["bob"].delete(alice_url).status_code == 204


def test_a_plain_member_can_be_removed_and_demoting_one_is_no_change(acme):
    bob_url = f"{acme['url']}{acme['members']['bob'].id}/"
    assert acme["alice"].patch(bob_url, {"role": "member"}, format="json").status_code == 200
    assert acme["alice"].delete(bob_url).status_code == 204


def test_a_role_that_does_not_exist_is_400(acme):
    response = acme["alice"].patch(f"{acme['url']}{acme['members']['bob'].id}/", {"role": "owner"}, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "type": "validation_error",
        "code": "invalid_choice",
        "detail": '"owner" is not a valid choice.',
        "attr": "role",
    }


def test_a_member_cannot_demote_the_admin(acme):
    response = acme["bob"].patch(f"{acme['url']}{acme['members']['alice'].id}/", {"role": "member"}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_the_409_is_in_the_schema(client):
    schema = client.get("/api/schema/?format=json").json()
    operations = schema["paths"]["/api/organizations/{organization_id}/members/{id}/"]
    for method in ("put", "patch", "delete"):
        assert operations[method]["responses"]["409"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }


@pytest.mark.django_db
def test_whoever_creates_an_organization_through_the_api_is_its_admin():
    _, key = make_user_with_key(None)
    created = client_with(key).post("/api/organizations/", {"name": "Acme"}, format="json")
    assert created.status_code == 201 and created.json()["role"] == "admin"
