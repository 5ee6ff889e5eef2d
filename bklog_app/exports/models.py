"""Export jobs (docs/contracts.md#exports): file exports of stored events, and historical exports that replay
stored events through one plugin config's `export_events`.

Both walk the events of a time range in (timestamp_ms, uuid) order, one chunk at a time, and
commit a cursor after each chunk: that cursor, with the file offset for file exports, is all a
resumed run needs to carry on exactly where the last committed chunk ended.
"""

from django.conf import settings
from django.db import models
from django.utils import timezone

from bklog_app.models import Project


class ExportStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"  # historical exports only
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # file exports whose file the clean-up deleted


# A run may start (or carry on) from these; the others need a resume first, or are final.
RUNNABLE = (ExportStatus.QUEUED, ExportStatus.RUNNING)
FINISHED = (ExportStatus.SUCCEEDED, ExportStatus.CANCELLED, ExportStatus.EXPIRED)


class ExportBase(models.Model):
    """What file and historical exports share: the range, the status, progress and resume state."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    after = models.DateTimeField(help_text="Events at or after this time.")
    before = models.DateTimeField(help_text="Events before this time.")
    status = models.CharField(max_length=16, choices=ExportStatus.choices, default=ExportStatus.QUEUED)
    rows_exported = models.BigIntegerField(default=0)
    rows_scanned = models.BigIntegerField(default=0, help_text="Rows read so far, filtered out or not.")
    estimated_rows = models.BigIntegerField(null=True, blank=True, help_text="Counted when the first run starts.")
    error = models.TextField(blank=True, default="")
    # Resume state: the last committed chunk ended at this (timestamp_ms, uuid).
    cursor_timestamp_ms = models.BigIntegerField(null=True, blank=True)
    cursor_uuid = models.CharField(max_length=36, blank=True, default="")
    chunks_committed = models.PositiveIntegerField(default=0)
    # The lease token of the run that may commit progress; a run that lost its lease cannot.
    run_token = models.CharField(max_length=32, blank=True, default="")
    runs = models.PositiveIntegerField(default=0, help_text="Runs started (first run, resumes, continuations).")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(default=timezone.now, help_text="Last sign of life of a run.")

    class Meta:
        abstract = True
        ordering = ["-created_at", "-id"]

    @property
    def progress(self) -> int:
        """0-100; 100 only once the export succeeded."""
        if self.status == ExportStatus.SUCCEEDED:
            return 100
        if not self.estimated_rows:
            return 0
        return min(99, self.rows_scanned * 100 // self.estimated_rows)

    @property
    def cursor(self) -> tuple[int, str] | None:
        if self.cursor_timestamp_ms is None:
            return None
        return self.cursor_timestamp_ms, self.cursor_uuid


class ExportJob(ExportBase):
    """A file export: the project's events of a range, filtered, as gzipped CSV or JSON lines."""

    class Format(models.TextChoices):
        CSV = "csv"
        JSONL = "jsonl"

    format = models.CharField(max_length=8, choices=Format.choices)
    events = models.JSONField(default=list, blank=True, help_text="Event names; empty for all.")
    properties = models.JSONField(default=dict, blank=True, help_text="{key: value}: properties that must equal.")
    file_name = models.CharField(max_length=300, blank=True, default="", help_text="Relative to EXPORTS_DIR.")
    file_offset = models.BigIntegerField(default=0, help_text="Bytes of the file that hold committed chunks.")
    file_size = models.BigIntegerField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="The file is deleted after this.")

    class Meta(ExportBase.Meta):
        indexes = [
            models.Index(fields=["project", "created_at"], name="exportjob_project_created"),
            models.Index(fields=["status", "expires_at"], name="exportjob_status_expires"),
        ]

    def __str__(self) -> str:
        return f"export {self.pk} ({self.format}, {self.status})"


class HistoricalExport(ExportBase):
    """Stored events of a range replayed, in order, through one plugin config's export_events."""

    plugin_config = models.ForeignKey(
        "plugins.PluginConfig", on_delete=models.CASCADE, related_name="historical_exports"
    )
    batch_attempt = models.PositiveIntegerField(
        default=1, help_text="Attempt number for the batch after the cursor (export_events retries)."
    )

    class Meta(ExportBase.Meta):
        indexes = [models.Index(fields=["plugin_config", "created_at"], name="histexport_config_created")]

    def __str__(self) -> str:
        return f"historical export {self.pk} through config {self.plugin_config_id} ({self.status})"
