"""Admin for exports: the API's actions (resume, cancel, and pause for historical exports) and a
progress column. Exports are started over the API; the admin does not create or edit them."""

from django.contrib import admin, messages
from django.utils.html import format_html

from bklog_app.exports.models import ExportJob, HistoricalExport
from pipeline.exports import control

COMMON_READONLY = [
    "project", "requested_by", "after", "before", "status", "rows_exported", "rows_scanned", "estimated_rows",
    "error", "cursor_timestamp_ms", "cursor_uuid", "chunks_committed", "run_token", "runs", "created_at",
    "started_at", "finished_at", "heartbeat_at",
]  # fmt: skip


class ExportAdminBase(admin.ModelAdmin):
    list_filter = ["status", "project"]
    date_hierarchy = "created_at"
    readonly_fields = COMMON_READONLY
    actions = ["resume_exports", "cancel_exports"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="progress")
    def progress_bar(self, job) -> str:
        return format_html(
            '<progress max="100" value="{}" title="{} of ~{} rows"></progress> {}%',
            job.progress,
            job.rows_exported,
            job.estimated_rows if job.estimated_rows is not None else "?",
            job.progress,
        )

    def _apply(self, request, queryset, action, done: str) -> None:
        ok = 0
        for job in queryset:
            try:
                action(job)
                ok += 1
            except control.InvalidTransition as exc:
                self.message_user(request, f"{job}: {exc}", messages.WARNING)
        if ok:
            self.message_user(request, f"{done} {ok} export(s).")

    @admin.action(description="Resume the selected exports (from their last committed chunk)")
    def resume_exports(self, request, queryset):
        self._apply(request, queryset, control.resume, "Resumed")

    @admin.action(description="Cancel the selected exports")
    def cancel_exports(self, request, queryset):
        self._apply(request, queryset, control.cancel, "Cancelled")


@admin.register(ExportJob)
class ExportJobAdmin(ExportAdminBase):
    list_display = ["id", "project", "format", "status", "progress_bar", "rows_exported", "estimated_rows",
                    "requested_by", "created_at", "expires_at"]  # fmt: skip
    readonly_fields = [*COMMON_READONLY, "format", "events", "properties", "file_name", "file_offset", "file_size",
                       "expires_at"]  # fmt: skip


@admin.register(HistoricalExport)
class HistoricalExportAdmin(ExportAdminBase):
    list_display = ["id", "project", "plugin_config", "status", "progress_bar", "rows_exported", "estimated_rows",
                    "batch_attempt", "created_at"]  # fmt: skip
    readonly_fields = [*COMMON_READONLY, "plugin_config", "batch_attempt"]
    actions = ["resume_exports", "pause_exports", "cancel_exports"]

    @admin.action(description="Pause the selected historical exports")
    def pause_exports(self, request, queryset):
        self._apply(request, queryset, control.pause, "Paused")
