"""schemathesis against /api/schema/: every operation, generated inputs, no 5xx, and every
response conforms to the schema."""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis import checks

from bklog_app.wsgi import application
from tests.factories import make_project, make_user_with_key

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)

PROJECT_ID = 4_200_000_001
# No 5xx, and every response (status, content type, headers, body) as the schema says.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture
def caller(db):
    # Requests go through the WSGI handler, which closes database connections when a request
    # ends; inside a test transaction that would close the test's own connection (Django's test
    # client does the same disconnection).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    project = make_project(id=PROJECT_ID)
    user, key = make_user_with_key(project.organization, staff=True)
    project.organization.memberships.filter(user=user).update(role="admin")
    yield {"Authorization": f"Bearer {key}"}, project
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@pytest.mark.django_db
def test_every_operation_conforms(case, caller):
    headers, project = caller
    if "project_id" in (case.path_parameters or {}):
        case.path_parameters["project_id"] = project.id
    if "organization_id" in (case.path_parameters or {}):
        case.path_parameters["organization_id"] = project.organization_id
    response = case.call(headers=headers)
    case.validate_response(response, headers=headers, checks=CHECKS)


def test_the_schema_and_docs_are_served(client):
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200
