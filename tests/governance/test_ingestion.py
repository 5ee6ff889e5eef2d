"""The tracking plan and the definitions in the ingestion batch, on the real stores: what each
mode stores, dead-letters, strips and counts; what the definitions record and how cheaply."""

import time
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from bklog_app.governance.models import EventDefinition, EventProperty, PlanViolation, PropertyDefinition
from bklog_app.models import DeadLetter
from pipeline.governance import definitions, violations
from pipeline.ingestion.batch import ingest_messages
from pipeline.storage.events import list_events
from tests.governance.conftest import event, message

pytestmark = pytest.mark.django_db

VALID = {"plan": "pro", "seats": 3}
WRONG_TYPE = {"plan": "pro", "seats": "three"}


def stored(project) -> dict[str, dict]:
    return {row["uuid"]: row for row in list_events(project.id, limit=1000)}


def test_enforce_stores_valid_events_and_dead_letters_the_others(project, set_plan):
    set_plan(project, mode="enforce", allow_unplanned_events=False)
    valid, wrong, unplanned, sdk = (event("signed_up", VALID), event("signed_up", WRONG_TYPE),
                                    event("clicked", {"x": 1}), event("$pageview", {"$current_url": "/"}))  # fmt: skip
    report = ingest_messages([message(project, [valid, wrong, unplanned, sdk])])

    assert (report.stored, report.dead_lettered) == (2, 2)
    assert set(stored(project)) == {valid["uuid"], sdk["uuid"]}  # `$` events are exempt unless planned
    letters = {letter.payload["uuid"]: letter for letter in DeadLetter.objects.filter(project=project)}
    assert {letter.step for letter in letters.values()} == {"schema"}
    assert letters[wrong["uuid"]].error.splitlines()[0] == (
        "TrackingPlanViolation: 'signed_up' breaks the tracking plan: "
        'properties/seats/type: seats: "three" is not of type "integer"'
    )
    assert letters[wrong["uuid"]].payload == wrong  # raw, as captured: replayable
    assert letters[unplanned["uuid"]].error.splitlines()[0] == (
        "TrackingPlanViolation: 'clicked' breaks the tracking plan: "
        "unplanned_event: 'clicked' is not in the tracking plan"
    )
    counts = dict(PlanViolation.objects.filter(project=project).values_list("rule", "count"))
    assert counts == {"properties/seats/type": 1, "unplanned_event": 1}


def test_a_planned_dollar_event_is_checked(project, set_plan):
    set_plan(project, mode="enforce", events={"$pageview": {"schema": {"required": ["$current_url"]}}})
    report = ingest_messages([message(project, [event("$pageview", {"$title": "x"})])])
    assert (report.stored, report.dead_lettered) == (0, 1)
    assert PlanViolation.objects.get(project=project).rule == "required/$current_url"


def test_observe_stores_everything_and_counts_the_violations(project, set_plan):
    set_plan(project, mode="observe", allow_unplanned_events=False)
    events = [event("signed_up", VALID), event("signed_up", WRONG_TYPE), event("signed_up", {"seats": 0}),
              event("clicked"), event("clicked")]  # fmt: skip
    report = ingest_messages([message(project, events)])

    assert (report.stored, report.dead_lettered) == (5, 0)
    assert not DeadLetter.objects.filter(project=project).exists()
    rows = {(v.event, v.rule): v for v in PlanViolation.objects.filter(project=project)}
    assert {key: v.count for key, v in rows.items()} == {
        ("signed_up", "properties/seats/type"): 1,
        ("signed_up", "properties/seats/minimum"): 1,
        ("signed_up", "required/plan"): 1,
        ("clicked", "unplanned_event"): 2,
    }
    sample = rows["signed_up", "required/plan"].samples[0]
    assert (sample["uuid"], sample["mode"], sample["message"]) == (
        events[2]["uuid"],
        "observe",
        '"plan" is a required property',
    )

    ingest_messages([message(project, [event("clicked") for _ in range(6)])])
    again = PlanViolation.objects.get(project=project, event="clicked")
    assert again.count == 8
    assert len(again.samples) == violations.SAMPLES


def test_a_retried_batch_counts_its_violations_once(project, set_plan):
    set_plan(project, mode="observe", allow_unplanned_events=False)
    batch = message(project, [event("clicked")])
    ingest_messages([batch])
    ingest_messages([batch])  # sent again (an SDK retry): the same uuid, stored once, counted once
    assert PlanViolation.objects.get(project=project).count == 1
    assert len(stored(project)) == 1


def test_strip_drops_the_properties_the_plan_does_not_know(project, set_plan):
    set_plan(project, mode="enforce", on_unknown_property="strip")
    sent = event("signed_up", {**VALID, "email": "a@b.c", "$lib": "posthog-python"})
    report = ingest_messages([message(project, [sent])])
    assert report.stored == 1
    properties = stored(project)[sent["uuid"]]["properties"]
    assert properties["plan"] == "pro" and properties["$lib"] == "posthog-python"
    assert "email" not in properties
    violation = PlanViolation.objects.get(project=project)
    assert (violation.rule, violation.samples[0]["message"]) == ("unknown_property", "not in the plan: email")


def test_the_check_runs_before_the_plugin_chain(project, set_plan, api_client):
    """A plugin's own properties need no place in the plan: a planned event with a property
    filter plugin that drops `plan` is still judged on what the client sent."""
    plugin = api_client.post("/api/plugins/", {"name": "f", "source_type": "builtin", "builtin": "property_filter"},
                             format="json").json()  # fmt: skip
    api_client.post(f"/api/projects/{project.id}/plugin_configs/",
                    {"plugin": plugin["id"], "enabled": True, "order": 0, "config": {"properties": "plan"}},
                    format="json")  # fmt: skip
    set_plan(project, mode="enforce")
    sent = event("signed_up", VALID)
    assert ingest_messages([message(project, [sent])]).stored == 1
    assert "plan" not in stored(project)[sent["uuid"]]["properties"]


def test_definitions_are_recorded_with_their_types(project):
    properties = {"plan": "pro", "seats": 3, "price": 9.5, "trial": False, "at": "2024-05-01T10:00:00Z",
                  "day": "2024-05-01", "address": {"city": "Paris"}, "items": [1, 2], "nothing": None}  # fmt: skip
    ingest_messages([message(project, [event("signed_up", properties), event("clicked", {"plan": "free"})])])

    assert set(EventDefinition.objects.filter(project=project).values_list("name", flat=True)) == {
        "signed_up",
        "clicked",
    }
    types = dict(PropertyDefinition.objects.filter(project=project).values_list("name", "property_type"))
    assert {key: types.get(key) for key in properties} == {
        "plan": "String", "seats": "Numeric", "price": "Numeric", "trial": "Boolean", "at": "DateTime",
        "day": "DateTime", "address": "Object", "items": "Array", "nothing": None,
    }  # fmt: skip
    seen_on_clicked = set(
        EventProperty.objects.filter(project=project, event="clicked").values_list("property", flat=True)
    )
    assert "plan" in seen_on_clicked and "seats" not in seen_on_clicked
    assert definitions.volumes(project.id, ["signed_up", "clicked", "never"]) == {
        "signed_up": 1,
        "clicked": 1,
        "never": 0,
    }


def test_known_names_cost_no_definition_query(project):
    ingest_messages([message(project, [event("signed_up", VALID)])])
    definitions._last_seen_written[0] = time.monotonic()  # the last-seen write is not due
    with CaptureQueriesContext(connection) as queries:
        ingest_messages([message(project, [event("signed_up", VALID) for _ in range(50)])])
    written = [q["sql"] for q in queries.captured_queries if "governance_" in q["sql"]]
    assert written == [] or all(q.startswith("SELECT") and "trackingplan" in q for q in written), written
    assert definitions.volumes(project.id, ["signed_up"]) == {"signed_up": 51}


def test_last_seen_is_written_for_every_name_seen_since_the_last_write(project):
    ingest_messages([message(project, [event("signed_up", VALID)])])
    definitions.write_last_seen()
    old = datetime(2024, 1, 1, tzinfo=UTC)
    EventDefinition.objects.filter(project=project).update(last_seen_at=old)
    PropertyDefinition.objects.filter(project=project).update(last_seen_at=old)
    definitions._last_seen_written[0] = 0.0  # due now
    ingest_messages([message(project, [event("signed_up", {"plan": "free"})])])
    assert EventDefinition.objects.get(project=project, name="signed_up").last_seen_at > old
    seen = dict(PropertyDefinition.objects.filter(project=project).values_list("name", "last_seen_at"))
    assert seen["plan"] > old and seen["seats"] == old


def test_names_a_definition_cannot_hold_are_left_out_and_the_rest_recorded(project):
    long_key, nul_key = "k" * 401, "bad\x00key"
    sent = event("signed_up", {long_key: 1, nul_key: 2, "plan": "pro"})
    assert ingest_messages([message(project, [sent, event("nul\x00event", {"x": 1})])]).stored == 2
    definitions.write_last_seen()
    names = set(PropertyDefinition.objects.filter(project=project).values_list("name", flat=True))
    assert {"plan", "x"} <= names and not {long_key, nul_key} & names
    assert set(EventDefinition.objects.filter(project=project).values_list("name", flat=True)) == {"signed_up"}


def test_an_event_name_with_nul_still_counts_its_violation(project, set_plan):
    set_plan(project, mode="observe", allow_unplanned_events=False)
    assert ingest_messages([message(project, [event("nul\x00event")])]).stored == 1
    assert PlanViolation.objects.get(project=project).event == "nul\ufffdevent"
