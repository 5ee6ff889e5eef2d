"""The exports API: what it accepts (exact error bodies), who sees what, download and expiry,
and the actions' status rules. Runs happen in this process (the end-to-end tests use workers)."""

import gzip
from datetime import timedelta

import pytest
from django.utils import timezone

from bklog_app.exports.models import ExportJob, ExportStatus, HistoricalExport
from pipeline.exports.file_export import run_file_export
from tests.exports.conftest import make_export, store_events
from tests.factories import api_client_for, make_project

GOOD = {"format": "csv", "after": "2024-03-01T00:00:00Z", "before": "2024-03-02T00:00:00Z"}


@pytest.fixture(autouse=True)
def exports_dir(settings, tmp_path):
    settings.EXPORTS_DIR = str(tmp_path / "exports")


def url(project, *parts) -> str:
    return "/".join([f"/api/projects/{project.id}/exports", *map(str, parts)]) + "/"


def error(response) -> dict:
    return response.json()


def test_create_answers_201_with_the_job(api_client, project):
    body = {**GOOD, "events": ["signed_up", "signed_up", "$pageview"], "properties": {"plan": "pro", "n": 3}}
    response = api_client.post(url(project), body, format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    job = ExportJob.objects.get(pk=data["id"])
    assert data["status"] == "queued"
    assert data["format"] == "csv"
    assert data["after"] == "2024-03-01T00:00:00Z" and data["before"] == "2024-03-02T00:00:00Z"
    assert data["events"] == ["signed_up", "$pageview"]
    assert data["properties"] == {"plan": "pro", "n": 3}
    assert (data["rows_exported"], data["estimated_rows"], data["progress"], data["error"]) == (0, None, 0, None)
    assert data["download_url"] is None
    assert job.project_id == project.id and job.requested_by is not None


def test_a_time_with_any_offset_is_taken_as_utc(api_client, project):
    """Python reads offsets up to 23:59, PostgreSQL keeps them only up to 15:59."""
    body = {**GOOD, "after": "2024-03-01T16:23:00+16:23", "before": "2024-03-01T23:00:00-16:00"}
    response = api_client.post(url(project), body, format="json")
    assert response.status_code == 201, response.content
    assert (response.json()["after"], response.json()["before"]) == ("2024-03-01T00:00:00Z", "2024-03-02T15:00:00Z")


@pytest.mark.parametrize(
    "body, attr, detail",
    [
        ({**GOOD, "format": "xml"}, "format", '"xml" is not a valid choice.'),
        ({k: v for k, v in GOOD.items() if k != "format"}, "format", "This field is required."),
        ({**GOOD, "after": "yesterday"}, "after", "Must be an ISO 8601 time, such as 2024-01-31T12:00:00Z."),
        (
            {**GOOD, "before": "9999-12-31T23:00:00-16:00"},
            "before",
            "Must be an ISO 8601 time, such as 2024-01-31T12:00:00Z.",
        ),
        ({k: v for k, v in GOOD.items() if k != "before"}, "before", "This field is required."),
        ({**GOOD, "before": "2024-03-01T00:00:00Z"}, "before", "'before' must be later than 'after'."),
        (
            {**GOOD, "after": "0509-03-17T23:26:28Z"},
            "after",
            "Events are stored from 1970-01-01T00:00:00Z on; give a later time.",
        ),
        ({**GOOD, "events": "signed_up"}, "events", 'Expected a list of items but got type "str".'),
        ({**GOOD, "properties": ["plan"]}, "properties", 'Expected a dictionary of items but got type "list".'),
        (
            {**GOOD, "properties": {"plan": {"nested": 1}}},
            "properties",
            "Property 'plan': give a string, number, boolean or null; values are matched by equality.",
        ),
        ({**GOOD, "properties": {"": 1}}, "properties", "Property names must not be empty."),
    ],
)
def test_bad_input_answers_400_with_the_field(api_client, project, body, attr, detail):
    response = api_client.post(url(project), body, format="json")
    assert response.status_code == 400
    assert error(response) == {"type": "validation_error", "code": error(response)["code"], "detail": detail,
                               "attr": attr}  # fmt: skip
    assert not ExportJob.objects.exists()


def test_list_and_detail(api_client, project):
    first, second = make_export(project), make_export(project, format="jsonl")
    make_export(make_project())  # another organization's
    response = api_client.get(url(project))
    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [second.pk, first.pk]
    detail = api_client.get(url(project, first.pk)).json()
    for field in ("id", "status", "rows_exported", "estimated_rows", "progress", "error"):
        assert field in detail
    assert api_client.get(url(project) + "?limit=1").json()["results"][0]["id"] == second.pk
    response = api_client.get(url(project) + "?limit=0")
    assert response.status_code == 400 and error(response)["attr"] == "limit"


def test_download_streams_the_file_to_members_only(api_client, project):
    store_events(project.id, 4)
    job = make_export(project)
    run_file_export(job.pk)
    detail = api_client.get(url(project, job.pk)).json()
    assert detail["status"] == "succeeded" and detail["progress"] == 100 and detail["rows_exported"] == 4
    assert detail["download_url"] == f"http://testserver{url(project, job.pk, 'download')}"
    response = api_client.get(url(project, job.pk, "download"))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/gzip"
    assert f'filename="export-{job.pk}.csv.gz"' in response["Content-Disposition"]
    lines = gzip.decompress(b"".join(response.streaming_content)).splitlines()
    assert len(lines) == 5

    outsider = api_client_for(make_project().organization)
    for path in (url(project, job.pk, "download"), url(project, job.pk), url(project)):
        response = outsider.get(path)
        assert response.status_code == 404
        assert (error(response)["type"], error(response)["detail"]) == ("invalid_request", "No such project.")
    response = outsider.post(url(project, job.pk, "resume"))
    assert response.status_code == 404


def test_download_needs_a_key(db):
    project = make_project()
    response = api_client_for(None).get(f"/api/projects/{project.id}/exports/1/download/")
    assert response.status_code == 404
    from rest_framework.test import APIClient

    response = APIClient().get(f"/api/projects/{project.id}/exports/1/download/")
    assert response.status_code == 401
    assert error(response)["type"] == "authentication_error"


def test_download_before_success_is_409_and_after_expiry_410(api_client, project):
    job = make_export(project)
    response = api_client.get(url(project, job.pk, "download"))
    assert response.status_code == 409
    assert error(response) == {
        "type": "invalid_request",
        "code": "invalid_status",
        "detail": "This export is queued; its file can be downloaded once it has succeeded.",
        "attr": None,
    }
    run_file_export(job.pk)
    ExportJob.objects.filter(pk=job.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    gone = {
        "type": "invalid_request",
        "code": "expired",
        "detail": "This export's file has expired and was deleted; start a new export.",
        "attr": None,
    }
    response = api_client.get(url(project, job.pk, "download"))
    assert (response.status_code, error(response)) == (410, gone)
    from pipeline.exports.cleanup import expire_exports

    expire_exports()
    assert api_client.get(url(project, job.pk)).json()["status"] == "expired"
    response = api_client.get(url(project, job.pk, "download"))
    assert (response.status_code, error(response)) == (410, gone)


def test_resume_and_cancel_follow_the_status(api_client, project):
    job = make_export(project, status=ExportStatus.FAILED, error="ClickHouse said no")
    response = api_client.post(url(project, job.pk, "resume"))
    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    response = api_client.post(url(project, job.pk, "cancel"))
    assert (response.status_code, response.json()["status"]) == (200, "cancelled")
    assert api_client.post(url(project, job.pk, "cancel")).status_code == 200  # again: nothing changes
    response = api_client.post(url(project, job.pk, "resume"))
    assert response.status_code == 409
    assert error(response) == {
        "type": "invalid_request",
        "code": "invalid_status",
        "detail": "This export is cancelled; only failed, paused or interrupted ones resume.",
        "attr": None,
    }
    done = make_export(project, status=ExportStatus.SUCCEEDED)
    response = api_client.post(url(project, done.pk, "cancel"))
    assert response.status_code == 409
    assert error(response)["detail"] == "This export is succeeded already; there is nothing to cancel."


def test_unknown_export_is_404(api_client, project):
    response = api_client.get(url(project, 987654321))
    assert response.status_code == 404
    assert error(response)["detail"] == "No such export."


# --- historical exports ----------------------------------------------------------------------


def historical_url(project, config_id, *parts) -> str:
    base = f"/api/projects/{project.id}/plugin_configs/{config_id}/historical_exports"
    return "/".join([base, *map(str, parts)]) + "/"


def test_historical_export_create_pause_resume_cancel(api_client, project, install_plugin):
    _, config = install_plugin("def export_events(events, meta):\n    pass\n")
    body = {"after": GOOD["after"], "before": GOOD["before"]}
    response = api_client.post(historical_url(project, config["id"]), body, format="json")
    assert response.status_code == 201, response.content
    data = response.json()
    assert (data["status"], data["plugin_config"], data["progress"]) == ("queued", config["id"], 0)
    export_id = data["id"]
    assert HistoricalExport.objects.get(pk=export_id).requested_by is not None
    listed = api_client.get(historical_url(project, config["id"])).json()["results"]
    assert [row["id"] for row in listed] == [export_id]
    assert api_client.get(historical_url(project, config["id"], export_id)).json()["id"] == export_id

    response = api_client.post(historical_url(project, config["id"], export_id, "pause"))
    assert (response.status_code, response.json()["status"]) == (200, "paused")
    response = api_client.post(historical_url(project, config["id"], export_id, "resume"))
    assert (response.status_code, response.json()["status"]) == (200, "queued")
    response = api_client.post(historical_url(project, config["id"], export_id, "cancel"))
    assert (response.status_code, response.json()["status"]) == (200, "cancelled")
    response = api_client.post(historical_url(project, config["id"], export_id, "pause"))
    assert response.status_code == 409
    assert error(response)["detail"] == "This historical export is cancelled; only queued or running ones pause."


def test_historical_export_needs_a_plugin_with_export_events(api_client, project, install_plugin):
    _, config = install_plugin("def on_event(event, meta):\n    pass\n")
    response = api_client.post(
        historical_url(project, config["id"]), {"after": GOOD["after"], "before": GOOD["before"]}, format="json"
    )
    assert response.status_code == 400
    assert error(response) == {
        "type": "validation_error",
        "code": "invalid",
        "detail": "Plugin 'Export test' has no export_events; pick a config whose plugin has.",
        "attr": "plugin_config",
    }
    response = api_client.post(historical_url(project, 987654321), {}, format="json")
    assert response.status_code == 404
    assert error(response)["detail"] == "No such plugin config."
