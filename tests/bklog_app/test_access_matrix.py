"""Every API operation in the OpenAPI schema, three ways: no key (401), a revoked key (401),
and a key of another organization (404 or 403, never the data)."""

import re
import uuid

import pytest
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from bklog_app.governance.models import EventDefinition
from bklog_app.models import DeadLetter, Membership, PersonalAPIKey
from pipeline.ingestion.batch import ingest_messages
from tests.factories import make_project, make_user_with_key

pytestmark = pytest.mark.django_db

PUBLIC = {"/api/schema/", "/api/docs/"}
# Collections listing the caller's own things: an outsider gets 200 with none of ours.
OWN_COLLECTIONS = {"/api/keys/", "/api/organizations/", "/api/projects/", "/api/plugins/", "/api/plugins/builtins/"}


def operations():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    for path, item in sorted(schema["paths"].items()):
        for method in item:
            if method in ("get", "post", "put", "patch", "delete") and path not in PUBLIC:
                yield path, method


OPERATIONS = list(operations())
# Server SDKs' flag definitions name the project by its capture token (bklog_app/sdk/definitions.py).
TOKEN_SCOPED = {"/flags/definitions", "/api/feature_flag/local_evaluation/"}


def client(key: str | None) -> APIClient:
    api = APIClient()
    if key:
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return api


@pytest.fixture
def world(project):
    """Organization A with one of everything, its admin's key; a revoked key; an outsider."""
    admin_user, admin_key = make_user_with_key(None)
    Membership.objects.create(organization=project.organization, user=admin_user, role="admin")
    owner = client(admin_key)
    plugin = owner.post("/api/plugins/", {"name": "f", "source_type": "builtin", "builtin": "property_filter"},
                        format="json").json()  # fmt: skip
    config = owner.post(f"/api/projects/{project.id}/plugin_configs/",
                        {"plugin": plugin["id"], "enabled": True, "order": 0, "config": {"properties": "email"}},
                        format="json").json()  # fmt: skip
    message = {"id": str(uuid.uuid4()), "token": project.api_token, "project_id": project.id, "ip": None,
               "now": "2024-06-01T00:00:00.000+00:00", "sent_at": None,
               "events": [{"event": "e", "distinct_id": "person-a"}, {"event": "broken"}]}  # fmt: skip
    ingest_messages([message])
    person = owner.get(f"/api/projects/{project.id}/persons/").json()["results"][0]
    export = owner.post(f"/api/projects/{project.id}/exports/",
                        {"format": "jsonl", "after": "2024-01-01T00:00:00Z", "before": "2025-01-01T00:00:00Z"},
                        format="json").json()  # fmt: skip
    webhook = owner.post("/api/plugins/", {"name": "w", "source_type": "builtin", "builtin": "webhook_forwarder"},
                         format="json").json()  # fmt: skip
    exporting = owner.post(f"/api/projects/{project.id}/plugin_configs/",
                           {"plugin": webhook["id"], "enabled": True, "order": 1,
                            "config": {"url": "http://127.0.0.1:9/", "auth_token": "s3cret-token"}},
                           format="json").json()  # fmt: skip
    historical = owner.post(f"/api/projects/{project.id}/plugin_configs/{exporting['id']}/historical_exports/",
                            {"after": "2024-01-01T00:00:00Z", "before": "2025-01-01T00:00:00Z"},
                            format="json").json()  # fmt: skip
    deletion = owner.post(f"/api/projects/{project.id}/deletions/", {"event": "e"}, format="json").json()
    suppression = owner.post(f"/api/projects/{project.id}/suppressions/", {"distinct_id": "x"}, format="json").json()
    revoked_user, revoked_key = make_user_with_key(project.organization)
    PersonalAPIKey.objects.filter(user=revoked_user).update(revoked_at="2024-01-01T00:00:00Z")
    _, outsider_key = make_user_with_key(make_project().organization)
    ids = {
        "project_id": project.id,
        "organization_id": project.organization_id,
        "plugin_id": plugin["id"],
        "config_id": config["id"],
        "letter_id": DeadLetter.objects.get(project=project).id,
        "person_id": person["id"],
        "export_id": export.get("id"),
        "deletion_id": deletion["id"],
        "suppression_id": suppression["id"],
        "definition_id": EventDefinition.objects.get(project=project, name="e").id,
    }
    assert historical.get("id"), historical
    return {
        "ids": ids,
        "historical_id": historical.get("id"),
        "exporting_config_id": exporting["id"],
        "revoked": revoked_key,
        "outsider": outsider_key,
        "admin_user": admin_user,
        "project": project,
    }


def fill(path: str, world: dict) -> str:
    ids = dict(world["ids"])
    if "/historical_exports/" in path:
        ids["export_id"] = world["historical_id"]
        ids["config_id"] = world["exporting_config_id"]
    if path.startswith("/api/keys/{id}"):
        ids["id"] = PersonalAPIKey.objects.filter(user=world["admin_user"]).first().id
    elif path.startswith("/api/organizations/{organization_id}/members/{id}"):
        ids["id"] = Membership.objects.filter(organization_id=ids["organization_id"]).first().id
    elif path.startswith("/api/organizations/{id}"):
        ids["id"] = ids["organization_id"]
    url = re.sub(r"\{(\w+)\}", lambda m: str(ids[m.group(1)]), path)
    if path in TOKEN_SCOPED:
        url += f"?token={world['project'].api_token}"
    return url


def call(api: APIClient, method: str, url: str):
    return getattr(api, method)(url, {}, format="json") if method != "get" else api.get(url)


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m.upper()} {p}" for p, m in OPERATIONS])
def test_no_key_and_revoked_key_are_401(world, path, method):
    url = fill(path, world)
    for key in (None, world["revoked"]):
        response = call(client(key), method, url)
        assert response.status_code == 401, (key, response.content[:200])
        assert response.json()["type"] == "authentication_error"


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m.upper()} {p}" for p, m in OPERATIONS])
def test_another_organizations_key_never_reaches_our_data(world, path, method):
    url = fill(path, world)
    response = call(client(world["outsider"]), method, url)
    if path in OWN_COLLECTIONS:
        if method == "get":
            assert response.status_code == 200
            body = response.content.decode()
            assert world["project"].api_token not in body
            assert f'"id":{world["ids"]["project_id"]}' not in body.replace(" ", "")
        return
    assert response.status_code in (403, 404), (response.status_code, response.content[:300])
