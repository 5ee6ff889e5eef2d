"""The admin shows exports with a progress column and offers the API's actions (pytest-django's
`admin_client`: a logged-in superuser)."""

from datetime import timedelta

from bklog_app.exports.models import ExportStatus, HistoricalExport
from tests.exports.conftest import START, make_export


def test_file_exports_list_with_progress_and_actions(admin_client, project):
    job = make_export(project, status=ExportStatus.RUNNING, rows_exported=25, rows_scanned=25, estimated_rows=100)
    failed = make_export(project, status=ExportStatus.FAILED, error="boom")
    response = admin_client.get("/admin/exports/exportjob/")
    assert response.status_code == 200
    page = response.content.decode()
    assert '<progress max="100" value="25"' in page
    assert "resume_exports" in page and "cancel_exports" in page

    response = admin_client.post(
        "/admin/exports/exportjob/", {"action": "resume_exports", "_selected_action": [failed.pk]}, follow=True
    )
    assert response.status_code == 200
    failed.refresh_from_db()
    assert failed.status == ExportStatus.QUEUED
    admin_client.post("/admin/exports/exportjob/", {"action": "cancel_exports", "_selected_action": [job.pk]})
    job.refresh_from_db()
    assert job.status == ExportStatus.CANCELLED


def test_historical_exports_can_be_paused_from_the_admin(admin_client, project, install_plugin):
    _, config = install_plugin("def export_events(events, meta):\n    pass\n")
    job = HistoricalExport.objects.create(
        project=project, plugin_config_id=config["id"], after=START, before=START + timedelta(days=1),
        status=ExportStatus.RUNNING,
    )  # fmt: skip
    page = admin_client.get("/admin/exports/historicalexport/").content.decode()
    assert "pause_exports" in page and "<progress" in page
    admin_client.post("/admin/exports/historicalexport/", {"action": "pause_exports", "_selected_action": [job.pk]})
    job.refresh_from_db()
    assert job.status == ExportStatus.PAUSED
