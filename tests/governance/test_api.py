"""The governance API: definitions in PostHog's shapes, the plan exported and imported, drafts,
checks and violations; every bad input with its status and error body."""

import pytest
from rest_framework.test import APIClient

from bklog_app.models import Membership
from pipeline.ingestion.batch import ingest_messages
from tests.factories import make_user_with_key
from tests.governance.conftest import SIGNUP_SCHEMA, event, message, reload_plans

pytestmark = pytest.mark.django_db

PLAN = {
    "mode": "enforce",
    "allow_unplanned_events": False,
    "on_unknown_property": "allow",
    "events": {"signed_up": {"schema": SIGNUP_SCHEMA}},
}


@pytest.fixture
def admin_client(project) -> APIClient:
    user, key = make_user_with_key(None)
    Membership.objects.create(organization=project.organization, user=user, role="admin")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def seen(project):
    """Two events and their properties, as ingestion saw them."""
    ingest_messages([message(project, [
        event("signed_up", {"plan": "pro", "seats": 3, "$lib": "web"}),
        event("signed_up", {"plan": "free", "seats": 1}),
        event("clicked", {"button": "buy", "at": "2024-05-01T10:00:00Z"}),
    ])])  # fmt: skip


def error(status_code: int, code: str, detail: str, attr: str | None) -> tuple:
    type_ = {400: "validation_error", 403: "authentication_error", 404: "invalid_request"}[status_code]
    return status_code, {"type": type_, "code": code, "detail": detail, "attr": attr}


def answer(response) -> tuple:
    return response.status_code, response.json()


def test_event_definitions_list_search_and_describe(project, api_client, seen):
    base = f"/api/projects/{project.id}/event_definitions/"
    body = api_client.get(base).json()
    assert body["count"] == 2
    by_name = {row["name"]: row for row in body["results"]}
    signed_up = by_name["signed_up"]
    assert set(signed_up) == {"id", "name", "volume_30_day", "created_at", "last_seen_at", "description", "tags",
                              "verified"}  # fmt: skip
    assert (signed_up["volume_30_day"], by_name["clicked"]["volume_30_day"]) == (2, 1)
    assert (signed_up["description"], signed_up["tags"], signed_up["verified"]) == ("", [], False)
    assert [row["name"] for row in api_client.get(base, {"search": "SIGN"}).json()["results"]] == ["signed_up"]

    url = f"{base}{signed_up['id']}/"
    patched = api_client.patch(url, {"description": "A new account", "tags": ["core"], "verified": True,
                                     "name": "renamed"}, format="json")  # fmt: skip
    assert patched.status_code == 200, patched.content
    assert {key: patched.json()[key] for key in ("name", "description", "tags", "verified", "volume_30_day")} == {
        "name": "signed_up", "description": "A new account", "tags": ["core"], "verified": True, "volume_30_day": 2,
    }  # fmt: skip
    assert api_client.get(url).json()["description"] == "A new account"


def test_event_definition_bad_inputs(project, api_client, seen):
    definition = api_client.get(f"/api/projects/{project.id}/event_definitions/").json()["results"][0]
    url = f"/api/projects/{project.id}/event_definitions/{definition['id']}/"
    assert answer(api_client.patch(url, {"tags": "core"}, format="json")) == error(
        400, "invalid", "tags must be a list of at most 50 strings.", "tags"
    )
    assert answer(api_client.patch(url, {"verified": "maybe"}, format="json")) == error(
        400, "invalid", "Must be a valid boolean.", "verified"
    )
    assert answer(api_client.get(f"/api/projects/{project.id}/event_definitions/999999/")) == error(
        404, "not_found", "No such event definition in this project.", None
    )
    assert api_client.put(url, {"description": "x"}, format="json").status_code == 405


def test_property_definitions_with_types_and_event_filter(project, api_client, seen):
    base = f"/api/projects/{project.id}/property_definitions/"
    rows = {row["name"]: row for row in api_client.get(base).json()["results"]}
    types = {name: (row["property_type"], row["is_numerical"]) for name, row in rows.items() if name[0] != "$"}
    assert types == {"plan": ("String", False), "seats": ("Numeric", True), "button": ("String", False),
                     "at": ("DateTime", False)}  # fmt: skip
    assert rows["$lib"]["property_type"] == "String"  # SDK properties are definitions too
    assert (rows["seats"]["property_type"], rows["seats"]["is_numerical"]) == ("Numeric", True)
    assert rows["at"]["property_type"] == "DateTime"
    on_clicked = api_client.get(base, {"event_names": '["clicked"]'}).json()["results"]
    assert {row["name"] for row in on_clicked} == {"button", "at"}
    assert [row["name"] for row in api_client.get(base, {"search": "sea"}).json()["results"]] == ["seats"]


def test_property_definitions_bad_event_names(project, api_client):
    base = f"/api/projects/{project.id}/property_definitions/"
    assert answer(api_client.get(base, {"event_names": "clicked"})) == error(
        400, "invalid", "Value must be valid JSON.", "event_names"
    )
    assert answer(api_client.get(base, {"event_names": '{"a": 1}'})) == error(
        400, "invalid", 'Must be a JSON list of event names, such as ["signed_up"].', "event_names"
    )


def test_the_plan_is_exported_and_imported_as_json(project, api_client, admin_client):
    url = f"/api/projects/{project.id}/tracking_plan/"
    assert api_client.get(url).json() == {"mode": "off", "allow_unplanned_events": True,
                                          "on_unknown_property": "allow", "events": {}, "version": 0,
                                          "updated_at": None}  # fmt: skip
    saved = admin_client.put(url, PLAN, format="json")
    assert saved.status_code == 200, saved.content
    exported = api_client.get(url).json()
    assert {key: exported[key] for key in PLAN} == PLAN and exported["version"] == 1
    again = admin_client.put(url, exported, format="json").json()  # GET's body imports as it is
    assert again["version"] == 2 and again["events"] == PLAN["events"]


def test_only_an_admin_changes_the_plan(project, api_client):
    assert answer(api_client.put(f"/api/projects/{project.id}/tracking_plan/", PLAN, format="json")) == error(
        403, "permission_denied", "Only an admin of this organization can do this. Ask one of its admins.", None
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({**PLAN, "mode": "strict"}, ("invalid_choice", '"strict" is not a valid choice.', "mode")),
        (
            {**PLAN, "on_unknown_property": "drop"},
            ("invalid_choice", '"drop" is not a valid choice.', "on_unknown_property"),
        ),
        ({**PLAN, "events": []}, ("not_a_dict", 'Expected a dictionary of items but got type "list".', "events")),
        ({**PLAN, "events": {"a": {}}}, ("required", "This field is required.", "events__a__schema")),
        (
            {**PLAN, "events": {"a": {"schema": {"type": "strin"}}}},
            (
                "invalid",
                "events['a'].schema is not a valid JSON Schema: \"strin\" is not valid under any of the "
                "schemas listed in the 'anyOf' keyword",
                "events",
            ),
        ),
        ({"events": {}}, ("required", "This field is required.", "mode")),
        (
            {**PLAN, "events": {"a": {"schema": {"enum": ["x\x00y"]}}}},
            (
                "invalid",
                "A name or a string in the plan contains a NUL character (\\u0000), which the database "
                "cannot store; remove it.",
                "events",
            ),
        ),
        (
            {**PLAN, "events": {"a\x00": {"schema": {}}}},
            (
                "invalid",
                "A name or a string in the plan contains a NUL character (\\u0000), which the database "
                "cannot store; remove it.",
                "events",
            ),
        ),
    ],
    ids=["mode", "on_unknown_property", "events-list", "no-schema", "bad-schema", "no-mode", "nul-value", "nul-name"],
)
def test_a_bad_plan_is_refused_with_what_to_fix(project, admin_client, body, expected):
    response = admin_client.put(f"/api/projects/{project.id}/tracking_plan/", body, format="json")
    assert answer(response) == error(400, *expected)


def test_a_draft_from_the_definitions(project, api_client, admin_client, seen):
    draft = api_client.get(f"/api/projects/{project.id}/tracking_plan/draft/").json()
    assert draft == {
        "mode": "observe", "allow_unplanned_events": True, "on_unknown_property": "allow", "version": 0,
        "updated_at": None,
        "events": {
            "clicked": {"schema": {"type": "object", "properties": {"at": {"type": "string"},
                                                                     "button": {"type": "string"}}}},
            "signed_up": {"schema": {"type": "object", "properties": {"plan": {"type": "string"},
                                                                       "seats": {"type": "number"}}}},
        },
    }  # fmt: skip
    assert admin_client.put(f"/api/projects/{project.id}/tracking_plan/", draft, format="json").status_code == 200


def test_check_an_event_before_sending_it(project, api_client, admin_client):
    admin_client.put(f"/api/projects/{project.id}/tracking_plan/", PLAN, format="json")
    url = f"/api/projects/{project.id}/tracking_plan/check/"
    good = api_client.post(url, {"event": "signed_up", "properties": {"plan": "pro"}}, format="json")
    assert good.json() == {"outcome": "stored", "planned": True, "valid": True, "violations": [],
                           "unknown_properties": []}  # fmt: skip
    bad = api_client.post(url, {"event": "signed_up", "properties": {"plan": "gold"}}, format="json").json()
    assert bad["outcome"] == "dead_lettered"
    assert bad["violations"] == [
        {"rule": "properties/plan/enum", "message": 'plan: "gold" is not one of "free" or "pro"'}
    ]
    unplanned = api_client.post(url, {"event": "clicked"}, format="json").json()
    assert (unplanned["outcome"], unplanned["planned"], unplanned["violations"][0]["rule"]) == (
        "dead_lettered",
        False,
        "unplanned_event",
    )
    draft_plan = {**PLAN, "mode": "enforce", "on_unknown_property": "strip"}
    stripped = api_client.post(url, {"event": "signed_up", "properties": {"plan": "pro", "x": 1}, "plan": draft_plan},
                               format="json").json()  # fmt: skip
    assert (stripped["outcome"], stripped["unknown_properties"]) == ("stored_stripped", ["x"])


def test_check_bad_inputs(project, api_client):
    url = f"/api/projects/{project.id}/tracking_plan/check/"
    assert answer(api_client.post(url, {"properties": {}}, format="json")) == error(
        400, "required", "This field is required.", "event"
    )
    assert answer(api_client.post(url, {"event": "a", "properties": [1]}, format="json")) == error(
        400, "not_a_dict", 'Expected a dictionary of items but got type "list".', "properties"
    )
    assert answer(api_client.post(url, {"event": "a", "plan": {"mode": "x"}}, format="json")) == error(
        400, "invalid_choice", '"x" is not a valid choice.', "plan__mode"
    )


def test_violations_are_listed_most_frequent_first(project, api_client, admin_client):
    admin_client.put(f"/api/projects/{project.id}/tracking_plan/", {**PLAN, "mode": "observe"}, format="json")
    reload_plans()
    ingest_messages([message(project, [event("clicked"), event("clicked"), event("signed_up", {"plan": 1})])])
    body = api_client.get(f"/api/projects/{project.id}/tracking_plan/violations/").json()
    assert [(row["event"], row["rule"], row["count"]) for row in body["results"]] == [
        ("clicked", "unplanned_event", 2), ("signed_up", "properties/plan/enum", 1),
        ("signed_up", "properties/plan/type", 1),
    ]  # fmt: skip
    assert set(body["results"][0]) == {"id", "event", "rule", "count", "samples", "first_seen_at", "last_seen_at"}
    only = api_client.get(f"/api/projects/{project.id}/tracking_plan/violations/", {"event": "signed_up"}).json()
    assert only["count"] == 2
