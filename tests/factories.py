"""Objects the tests need, made the way users make them."""

import itertools
import time
import uuid

from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from bklog_app.models import Membership, Organization, PersonalAPIKey, Project

_counter = itertools.count(1)
# ClickHouse keeps its rows across tests while the database is rolled back and reuses ids, so
# projects get ids that no earlier test (or earlier session) used.
_project_ids = itertools.count(int(time.time() * 1000) % 10**12)


def make_project(organization: Organization | None = None, **fields) -> Project:
    organization = organization or Organization.objects.create(name=f"org-{uuid.uuid4().hex[:8]}")
    return Project.objects.create(
        id=fields.pop("id", None) or next(_project_ids),
        organization=organization,
        name=fields.pop("name", f"project-{next(_counter)}"),
        **fields,
    )


def make_user_with_key(organization: Organization | None, *, staff: bool = False) -> tuple[object, str]:
    user = get_user_model().objects.create(username=f"user-{uuid.uuid4().hex[:10]}", is_staff=staff)
    if organization is not None:
        Membership.objects.create(organization=organization, user=user)
    _, key = PersonalAPIKey.issue(user)
    return user, key


def api_client_for(organization: Organization | None, *, staff: bool = False) -> APIClient:
    _, key = make_user_with_key(organization, staff=staff)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def wait_for_events(project_id: int, count: int, timeout: float = 30.0, **filters) -> list[dict]:
    """Poll ClickHouse until at least `count` events of the project are stored; return them.
    Raises AssertionError, saying how many arrived, if fewer did within `timeout` seconds."""
    from pipeline.storage.events import list_events

    deadline = time.monotonic() + timeout
    while True:
        rows = list_events(project_id, limit=100_000, **filters)
        if len(rows) >= count:
            return rows
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"project {project_id}: {len(rows)} of {count} expected events stored after {timeout:g} s"
                + (f" (filters {filters})" if filters else "")
            )
        time.sleep(0.1)


def assert_no_more_events(project_id: int, count: int, settle_seconds: float = 3.0, **filters) -> list[dict]:
    """Wait until `count` events of the project are stored, then `settle_seconds` more, and assert
    that no more arrived: for tests that prove something was not stored (an event dropped, a
    duplicate kept out). Returns the events."""
    from pipeline.storage.events import list_events

    wait_for_events(project_id, count, **filters)
    time.sleep(settle_seconds)
    rows = list_events(project_id, limit=100_000, **filters)
    assert len(rows) == count, (
        f"project {project_id}: {len(rows)} events stored, expected no more than {count} after {settle_seconds:g} s"
    )
    return rows
