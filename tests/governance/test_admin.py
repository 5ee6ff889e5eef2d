"""The admin: definitions listed with search and filters, a plan edited (and refused when it
cannot compile), drafted from the definitions, exported as JSON, and an event checked."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from bklog_app.governance.models import EventDefinition, PlanViolation, TrackingPlan
from pipeline.ingestion.batch import ingest_messages
from tests.governance.conftest import SIGNUP_SCHEMA, event, message

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client):
    user = get_user_model().objects.create_superuser("operator", "ops@example.com", "pw")
    client.force_login(user)
    return client


@pytest.fixture
def plan(project, set_plan) -> TrackingPlan:
    ingest_messages([message(project, [event("signed_up", {"plan": "pro", "seats": 2}), event("clicked")])])
    return set_plan(project, mode="observe", allow_unplanned_events=False)


def test_definitions_and_violations_are_listed_with_search_and_filters(operator, project, plan):
    ingest_messages([message(project, [event("clicked")])])
    page = operator.get(reverse("admin:governance_eventdefinition_changelist"), {"q": "sign"})
    assert b"signed_up" in page.content and b"clicked" not in page.content
    page = operator.get(reverse("admin:governance_propertydefinition_changelist"), {"property_type__exact": "Numeric"})
    assert b"seats" in page.content and b">plan<" not in page.content
    page = operator.get(reverse("admin:governance_planviolation_changelist"))
    assert b"unplanned_event" in page.content
    assert PlanViolation.objects.get(project=project).count == 1


def test_a_definition_is_described_in_the_admin(operator, project, plan):
    definition = EventDefinition.objects.get(project=project, name="signed_up")
    url = reverse("admin:governance_eventdefinition_change", args=[definition.pk])
    response = operator.post(url, {"description": "A new account", "tags": '["core"]', "verified": "on"})
    assert response.status_code == 302
    definition.refresh_from_db()
    assert (definition.description, definition.tags, definition.verified) == ("A new account", ["core"], True)


def test_a_plan_that_cannot_compile_is_refused(operator, project, plan):
    url = reverse("admin:governance_trackingplan_change", args=[plan.pk])
    form = {"project": project.pk, "mode": "enforce", "on_unknown_property": "allow",
            "events": json.dumps({"signed_up": {"schema": {"type": "strin"}}})}  # fmt: skip
    response = operator.post(url, form)
    assert response.status_code == 200
    assert b"events[&#x27;signed_up&#x27;].schema is not a valid JSON Schema" in response.content
    form["events"] = json.dumps({"signed_up": {"schema": SIGNUP_SCHEMA}})
    assert operator.post(url, form).status_code == 302
    plan.refresh_from_db()
    assert (plan.mode, plan.version) == ("enforce", 2)


def test_draft_export_and_check(operator, project, plan):
    changelist = reverse("admin:governance_trackingplan_changelist")
    operator.post(changelist, {"action": "draft_from_definitions", "_selected_action": [plan.pk]})
    plan.refresh_from_db()
    assert set(plan.events) == {"signed_up", "clicked"}
    assert plan.events["signed_up"]["schema"]["properties"] == {"plan": {"type": "string"}, "seats": {"type": "number"}}

    exported = operator.get(reverse("admin:governance_trackingplan_export", args=[plan.pk]))
    assert exported["Content-Disposition"] == f'attachment; filename="tracking-plan-{project.id}.json"'
    assert json.loads(exported.content)["events"] == plan.events

    check = reverse("admin:governance_trackingplan_check", args=[plan.pk])
    assert operator.get(check).status_code == 200
    response = operator.post(check, {"event": json.dumps({"event": "signed_up", "properties": {"seats": "x"}})})
    assert b'<h2 id="outcome">stored_with_violations</h2>' in response.content
    assert b"properties/seats/type" in response.content
    response = operator.post(check, {"event": "[1]"})
    assert b"Give a JSON object with an &quot;event&quot; name" in response.content
