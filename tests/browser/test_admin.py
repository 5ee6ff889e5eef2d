"""The admin in headless Chromium, after logging in through its login form, against real
Gunicorn: the console pages render with their stylesheets (every one answered 200 text/css, and
the header has the colour only the admin's CSS gives it), a plugin test run shows its output, a
dead letter replayed from the list is stored, an export shows its progress bar, event
definitions are listed and an event is checked against a tracking plan.

Full-page screenshots of each page are saved under var/screenshots/ for a person to look at.
"""

import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from tests.browser.conftest import SCREENSHOTS, run_scenario, summary, wait_for_event_names
from tests.factories import api_client_for, make_project

# Transactional, so the session sets the test database up; the module's rows are its fixtures'.
pytestmark = pytest.mark.django_db(transaction=True)
# --header-bg in Django's admin/css/base.css (#417690); the header is transparent without it.
ADMIN_HEADER_BACKGROUND = "rgb(65, 118, 144)"
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def console(organization, committed) -> dict:
    """A superuser, and one of each thing the console pages list."""
    from django.contrib.auth import get_user_model

    from bklog_app.exports.models import ExportJob
    from bklog_app.governance.models import EventDefinition, TrackingPlan
    from bklog_app.models import DeadLetter

    with committed():
        user = get_user_model().objects.create_superuser(f"admin-{uuid.uuid4().hex[:8]}", "a@example.com", PASSWORD)
        project = make_project(organization, name="Browser shop")
        api = api_client_for(organization)
        plugin = api.post("/api/plugins/", {"source_type": "builtin", "builtin": "property_filter"}, format="json")
        assert plugin.status_code == 201, plugin.content
        config = api.post(
            f"/api/projects/{project.id}/plugin_configs/",
            {"plugin": plugin.json()["id"], "enabled": True, "config": {"properties": "email"}},
            format="json",
        )
        assert config.status_code == 201, config.content
        letter = DeadLetter.objects.create(
            project=project,
            kind="event",
            step="process_event",
            error="ValueError: the plugin chain failed\nTraceback ...",
            payload={"event": "bklog_replayed", "distinct_id": "dead-1", "properties": {"n": 1},
                     "uuid": str(uuid.uuid4())},
            context={"token": project.api_token, "now": datetime.now(UTC).isoformat()},
        )  # fmt: skip
        start = datetime.now(UTC) - timedelta(days=1)
        export = ExportJob.objects.create(
            project=project, requested_by=user, format="csv", after=start, before=start + timedelta(days=1),
            status="running", rows_exported=40, rows_scanned=40, estimated_rows=100,
        )  # fmt: skip
        EventDefinition.objects.create(project=project, name="signed_up")
        plan = TrackingPlan.objects.create(
            project=project,
            mode="observe",
            events={"signed_up": {"schema": {"properties": {"plan": {"type": "string"}}}}},
        )
    yield {"user": user, "project": project, "config_id": config.json()["id"], "letter": letter, "export": export,
           "plan_id": plan.id}  # fmt: skip
    with committed():
        user.delete()
        get_user_model().objects.filter(memberships__organization=organization).delete()


@pytest.fixture(scope="module")
def admin(bklog, console) -> dict:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    project, config_id = console["project"], console["config_id"]
    sample = {"event": "signed_up", "distinct_id": "u1", "properties": {"email": "a@example.com", "plan": "pro"}}
    pages = [
        {"name": "admin-projects", "path": "/admin/bklog_app/project/", "expect": ["#result_list tbody tr"]},
        {"name": "admin-project-change", "path": f"/admin/bklog_app/project/{project.id}/change/",
         "expect": ["#project_form"]},
        {"name": "admin-project-events", "path": f"/admin/bklog_app/project/{project.id}/events/", "expect": []},
        {"name": "admin-plugin-configs", "path": "/admin/plugins/pluginconfig/", "expect": ["#result_list tbody tr"]},
        {"name": "admin-plugin-test-run", "path": f"/admin/plugins/pluginconfig/{config_id}/test/",
         "expect": ["#id_event"],
         "form": {"fill": {"#id_event": orjson.dumps(sample).decode()}, "submit": "input[type=submit]"}},
        {"name": "admin-dead-letters", "path": "/admin/bklog_app/deadletter/", "expect": ["#result_list tbody tr"],
         "form": {"check": ["#result_list input.action-select"], "select": {"select[name=action]": "replay_selected"},
                  "submit": "button[name=index]"}},
        {"name": "admin-exports", "path": "/admin/exports/exportjob/", "expect": ["#result_list progress"]},
        {"name": "admin-event-definitions", "path": "/admin/governance/eventdefinition/",
         "expect": ["#result_list tbody tr"]},
        {"name": "admin-tracking-plan-check", "path": f"/admin/governance/trackingplan/{console['plan_id']}/check/",
         "expect": ["#id_event"],
         "form": {"fill": {"#id_event": orjson.dumps({"event": "signed_up", "properties": {"plan": 1}}).decode()},
                  "submit": "input[type=submit]"}},
    ]  # fmt: skip
    scenario = {
        "base": bklog.url,
        "username": console["user"].username,
        "password": PASSWORD,
        "screenshots": str(SCREENSHOTS),
        "pages": pages,
    }
    output = run_scenario("admin", scenario)
    return {"login": output["login"], "login_console_errors": output["login_console_errors"],
            **{visit["name"]: visit for visit in output["visits"]}}  # fmt: skip


def page_errors(console_errors: list[str]) -> list[str]:
    """Console errors but Chromium's own ask for /favicon.ico, which bklog does not serve (404)."""
    return [error for error in console_errors if "/favicon.ico" not in error]


PAGES = ["admin-projects", "admin-project-change", "admin-project-events", "admin-plugin-configs",
         "admin-plugin-test-run", "admin-dead-letters", "admin-exports", "admin-event-definitions",
         "admin-tracking-plan-check"]  # fmt: skip


def test_login_through_the_form_opens_the_console(admin, bklog):
    login = admin["login"]
    assert login["url"] == f"{bklog.url}/admin/", login
    assert login["counts"]["#user-tools"] == 1
    assert page_errors(admin["login_console_errors"]) == []


@pytest.mark.parametrize("name", PAGES)
def test_page_renders_with_its_stylesheets(admin, name):
    visit = admin[name]
    assert visit["form_error"] is None, visit["opened"]
    for shown in filter(None, [visit["opened"], visit["submitted"]]):
        assert shown["status"] == 200, shown
        assert shown["stylesheets"], f"{shown['url']} links no stylesheet"
        bad = [s for s in shown["stylesheets"] if s["status"] != 200 or s["content_type"] != "text/css"]
        assert not bad, summary([{"method": "GET", **s} for s in bad])
        assert shown["header_background"] == ADMIN_HEADER_BACKGROUND, shown
        assert all(count >= 1 for count in shown["counts"].values()), shown["counts"]
    assert page_errors(visit["console_errors"]) == []
    assert visit["screenshot"].endswith(".png")


def test_the_plugin_test_run_shows_the_filtered_event(admin):
    result = admin["admin-plugin-test-run"]["submitted"]
    assert result["messages"] == [], result["messages"]
    (output,) = result["preformatted"]
    event = orjson.loads(output)
    assert event["event"] == "signed_up"
    assert "email" not in event["properties"] and event["properties"]["plan"] == "pro"


def test_a_dead_letter_replayed_from_the_list_is_stored(admin, console):
    result = admin["admin-dead-letters"]["submitted"]
    assert result["messages"] == ["Queued 1 dead letter(s) again."], result
    stored = wait_for_event_names(console["project"].id, {"bklog_replayed"})
    assert [(e["event"], e["distinct_id"]) for e in stored] == [("bklog_replayed", "dead-1")]


def test_an_export_shows_its_progress(admin):
    assert admin["admin-exports"]["opened"]["counts"]["#result_list progress"] == 1
