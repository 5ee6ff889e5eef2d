"""The real `posthog` SDK against a live server and a real worker: definitions appear with the
right types; under enforce a valid event is stored, a wrongly typed one and an unplanned one are
dead-lettered with the violation and stored once replayed after the plan is fixed; under observe
the same events are stored and the violations counted."""

import time

import pytest
import requests
from posthog import Posthog

from bklog_app.models import Membership
from tests.factories import make_user_with_key, wait_for_events
from tests.governance.conftest import SIGNUP_SCHEMA

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PLAN = {"mode": "enforce", "allow_unplanned_events": False, "events": {"signed_up": {"schema": SIGNUP_SCHEMA}}}


class Api:
    def __init__(self, base: str, project_id: int, key: str):
        self.base, self.project_id = f"{base}/api/projects/{project_id}", project_id
        self.headers = {"Authorization": f"Bearer {key}"}

    def get(self, path: str, **params) -> dict:
        response = requests.get(f"{self.base}/{path}", params=params, headers=self.headers, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def send(self, method: str, path: str, body: dict) -> dict:
        response = requests.request(method, f"{self.base}/{path}", json=body, headers=self.headers, timeout=10)
        assert response.status_code in (200, 202), response.text
        return response.json()

    def until(self, path: str, done, timeout: float = 30, **params) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            body = self.get(path, **params)
            if done(body) or time.monotonic() > deadline:
                return body
            time.sleep(0.2)


@pytest.fixture
def api(live_server, project) -> Api:
    user, key = make_user_with_key(None)
    Membership.objects.create(organization=project.organization, user=user, role="admin")
    return Api(live_server.url, project.id, key)


def send(live_server, project, events: list[tuple[str, dict]]) -> list[str]:
    sdk = Posthog(project.api_token, host=live_server.url, gzip=True, flush_at=50, flush_interval=0.2)
    uuids = [str(sdk.capture(name, distinct_id="sdk-user", properties=properties)) for name, properties in events]
    sdk.flush()
    sdk.shutdown()
    return uuids


VALID = ("signed_up", {"plan": "pro", "seats": 3})
WRONG_TYPE = ("signed_up", {"plan": "pro", "seats": "three"})
UNPLANNED = ("clicked", {"button": "buy"})


def test_definitions_appear_with_their_types(live_server, project, celery_worker, api):
    properties = {"plan": "pro", "seats": 3, "price": 9.5, "trial": True, "at": "2024-05-01T10:00:00Z",
                  "address": {"city": "Paris"}, "items": ["a", "b"]}  # fmt: skip
    send(live_server, project, [("signed_up", properties), UNPLANNED])
    wait_for_events(project.id, 2)

    events = api.until("event_definitions/", lambda body: body["count"] >= 2)
    assert {row["name"]: row["volume_30_day"] for row in events["results"]} == {"signed_up": 1, "clicked": 1}
    on_signed_up = api.get("property_definitions/", event_names='["signed_up"]', limit=1000)["results"]
    types = {row["name"]: row["property_type"] for row in on_signed_up}
    assert {key: types.get(key) for key in properties} == {
        "plan": "String", "seats": "Numeric", "price": "Numeric", "trial": "Boolean", "at": "DateTime",
        "address": "Object", "items": "Array",
    }  # fmt: skip
    assert types["$lib"] == "String"  # what the SDK adds is seen too
    assert "button" not in types


def test_enforce_dead_letters_then_replay_after_the_fix(live_server, project, celery_worker, api):
    api.send("PUT", "tracking_plan/", PLAN)
    valid, wrong, unplanned = send(live_server, project, [VALID, WRONG_TYPE, UNPLANNED])

    stored = wait_for_events(project.id, 1)
    letters = api.until("dead_letters/", lambda body: body["count"] >= 2, step="schema")["results"]
    assert [row["uuid"] for row in stored] == [valid]
    errors = {letter["payload"]["uuid"]: letter["error"].splitlines()[0] for letter in letters}
    assert errors == {
        wrong: "TrackingPlanViolation: 'signed_up' breaks the tracking plan: "
        'properties/seats/type: seats: "three" is not of type "integer"',
        unplanned: "TrackingPlanViolation: 'clicked' breaks the tracking plan: "
        "unplanned_event: 'clicked' is not in the tracking plan",
    }

    fixed = {**PLAN, "events": {**PLAN["events"], "clicked": {"schema": {"type": "object"}}}}
    fixed["events"]["signed_up"] = {"schema": {**SIGNUP_SCHEMA, "properties": {
        **SIGNUP_SCHEMA["properties"], "seats": {"type": ["integer", "string"]}}}}  # fmt: skip
    api.send("PUT", "tracking_plan/", fixed)
    assert api.send("POST", "dead_letters/replay/", {"step": "schema"}) == {"replayed": 2}

    stored = wait_for_events(project.id, 3)
    assert sorted(row["uuid"] for row in stored) == sorted([valid, wrong, unplanned])
    assert next(row for row in stored if row["uuid"] == wrong)["properties"]["seats"] == "three"


def test_observe_stores_the_same_events_and_counts_violations(live_server, project, celery_worker, api):
    api.send("PUT", "tracking_plan/", {**PLAN, "mode": "observe"})
    uuids = send(live_server, project, [VALID, WRONG_TYPE, UNPLANNED])

    stored = wait_for_events(project.id, 3)
    assert sorted(row["uuid"] for row in stored) == sorted(uuids)
    violations = api.until("tracking_plan/violations/", lambda body: body["count"] >= 2)["results"]
    assert sorted((row["event"], row["rule"], row["count"]) for row in violations) == [
        ("clicked", "unplanned_event", 1),
        ("signed_up", "properties/seats/type", 1),
    ]
    assert api.get("dead_letters/")["count"] == 0
    metrics = requests.get(f"{live_server.url}/metrics", timeout=10).text
    assert 'bklog_tracking_plan_violations_total{keyword="unplanned_event",mode="observe"}' in metrics
