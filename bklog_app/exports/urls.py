"""Exports API (docs/contracts.md#exports). Mounted at the root: every path starts with api/projects/<id>/."""

from django.urls import path

from bklog_app.exports import views

PROJECT = "api/projects/<int:project_id>"
EXPORT = f"{PROJECT}/exports/<int:export_id>"
HISTORICAL = f"{PROJECT}/plugin_configs/<int:config_id>/historical_exports"

urlpatterns = [
    path(f"{PROJECT}/exports/", views.ExportListView.as_view(), name="exports"),
    path(f"{EXPORT}/", views.ExportDetailView.as_view(), name="export"),
    path(f"{EXPORT}/download/", views.ExportDownloadView.as_view(), name="export-download"),
    path(f"{EXPORT}/resume/", views.ExportResumeView.as_view(), name="export-resume"),
    path(f"{EXPORT}/cancel/", views.ExportCancelView.as_view(), name="export-cancel"),
    path(f"{HISTORICAL}/", views.HistoricalExportListView.as_view(), name="historical-exports"),
    path(f"{HISTORICAL}/<int:export_id>/", views.HistoricalExportDetailView.as_view(), name="historical-export"),
    *(
        path(
            f"{HISTORICAL}/<int:export_id>/{action}/",
            views.HistoricalExportActionView.as_view(action=action),
            name=f"historical-export-{action}",
        )
        for action in ("pause", "resume", "cancel")
    ),
]
