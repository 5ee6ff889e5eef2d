"""Plugins, their per-project configs, and what the runtime keeps for them in the database."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from bklog_app.models import Organization, Project


class Plugin(models.Model):
    """Plugin code from one of three sources, with its plugin.json and detected capabilities."""

    class SourceType(models.TextChoices):
        BUILTIN = "builtin"
        LOCAL = "local"
        SOURCE = "source"

    name = models.CharField(max_length=200)
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="plugins"
    )
    source_type = models.CharField(max_length=16, choices=SourceType.choices)
    builtin = models.CharField(max_length=100, blank=True, default="", help_text="Built-in folder name.")
    path = models.CharField(max_length=500, blank=True, default="", help_text="Folder under PLUGINS_DIR.")
    plugin_json = models.JSONField(default=dict, help_text="The validated plugin.json.")
    capabilities = models.JSONField(default=dict, help_text='{"methods", "jobs", "scheduled_tasks"}')
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    # Part of every loaded instance's version: a change reloads the plugin everywhere.
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.source_type})"

    @property
    def config_schema(self) -> list[dict]:
        return list(self.plugin_json.get("config") or [])


class PluginSourceFile(models.Model):
    """One file of a `source` plugin (plugin.json, plugin.py), edited over the API or admin."""

    plugin = models.ForeignKey(Plugin, on_delete=models.CASCADE, related_name="source_files")
    filename = models.CharField(max_length=200)
    source = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["plugin", "filename"], name="unique_plugin_source_file")]

    def __str__(self) -> str:
        return f"{self.plugin.name}/{self.filename}"


class PluginConfig(models.Model):
    """A plugin enabled for one project, with its config values and its last error."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="plugin_configs")
    plugin = models.ForeignKey(Plugin, on_delete=models.CASCADE, related_name="configs")
    enabled = models.BooleanField(default=False)
    order = models.IntegerField(default=0)
    config = models.JSONField(default=dict, blank=True, help_text="Validated against plugin.json.")
    error = models.JSONField(null=True, blank=True, help_text="The last error: name, message, time, traceback, event.")
    created_at = models.DateTimeField(default=timezone.now)
    # Part of every loaded instance's version: a change reloads this config everywhere.
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["order", "id"]
        indexes = [models.Index(fields=["project", "enabled"], name="plugincfg_project_enabled")]

    def __str__(self) -> str:
        return f"{self.plugin.name} ({self.pk}) for {self.project}"

    @property
    def display_name(self) -> str:
        """How `$plugins_succeeded` / `$plugins_failed` name this config."""
        return f"{self.plugin.name} ({self.pk})"


class PluginAttachment(models.Model):
    plugin_config = models.ForeignKey(PluginConfig, on_delete=models.CASCADE, related_name="attachments")
    key = models.CharField(max_length=200)
    file_name = models.CharField(max_length=300)
    content_type = models.CharField(max_length=200, default="application/octet-stream")
    file_size = models.PositiveIntegerField(default=0)
    contents = models.BinaryField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["plugin_config", "key"], name="unique_plugin_attachment")]

    def __str__(self) -> str:
        return f"{self.key}: {self.file_name}"


class PluginStorage(models.Model):
    """`meta.storage`: persistent JSON values per plugin config."""

    plugin_config = models.ForeignKey(PluginConfig, on_delete=models.CASCADE, related_name="storage")
    key = models.CharField(max_length=200)
    value = models.JSONField(null=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["plugin_config", "key"], name="unique_plugin_storage_key")]

    def __str__(self) -> str:
        return self.key


class PluginLogEntry(models.Model):
    class Source(models.TextChoices):
        SYSTEM = "SYSTEM"
        PLUGIN = "PLUGIN"
        CONSOLE = "CONSOLE"

    class Type(models.TextChoices):
        DEBUG = "DEBUG"
        INFO = "INFO"
        WARN = "WARN"
        ERROR = "ERROR"

    MAX_MESSAGE_LENGTH = 50_000

    plugin_config = models.ForeignKey(PluginConfig, on_delete=models.CASCADE, related_name="log_entries")
    project_id = models.BigIntegerField(db_index=True)
    timestamp = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=8, choices=Source.choices)
    type = models.CharField(max_length=8, choices=Type.choices)
    message = models.TextField()
    instance_id = models.CharField(max_length=36, blank=True, default="")

    class Meta:
        ordering = ["-timestamp", "-id"]
        indexes = [models.Index(fields=["plugin_config", "-timestamp"], name="pluginlog_config_time")]
        verbose_name_plural = "plugin log entries"

    def __str__(self) -> str:
        return f"{self.timestamp:%Y-%m-%d %H:%M:%S} {self.source} {self.type} {self.message[:60]}"


class PluginJob(models.Model):
    """A plugin job (`meta.jobs.<name>(payload).run_*()`), kept until it ran.

    Jobs due soon go to Celery with a short countdown; later ones wait here until the due-job
    poller hands them over, so no Celery message ever carries a long ETA.
    """

    class Status(models.TextChoices):
        PENDING = "pending"  # waiting for the poller
        QUEUED = "queued"  # handed to Celery
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"  # dead-lettered

    plugin_config = models.ForeignKey(PluginConfig, on_delete=models.CASCADE, related_name="jobs")
    name = models.CharField(max_length=200)
    payload = models.JSONField(default=dict)
    run_at = models.DateTimeField(db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run_at", "id"]
        indexes = [models.Index(fields=["status", "run_at"], name="pluginjob_status_run_at")]

    def __str__(self) -> str:
        return f"{self.name} ({self.status}) at {self.run_at:%Y-%m-%d %H:%M:%S}"
