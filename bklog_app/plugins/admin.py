import json

from django import forms
from django.contrib import admin, messages
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from bklog_app.plugins.models import (
    Plugin,
    PluginAttachment,
    PluginConfig,
    PluginJob,
    PluginLogEntry,
    PluginSourceFile,
    PluginStorage,
)
from pipeline.plugins.config import mask_secrets
from pipeline.plugins.loader import PluginLoadError, code_for, inspect_code
from pipeline.plugins.reload import publish_reload
from pipeline.plugins.tasks import test_run_on_a_worker
from pipeline.plugins.testrun import NoWorkerAnswered, RedisUnavailable

SAMPLE_EVENT = {
    "event": "$pageview",
    "distinct_id": "test-user",
    "properties": {"$current_url": "https://example.com/"},
}


class TestRunForm(forms.Form):
    event = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 12, "cols": 100}),
        initial=json.dumps(SAMPLE_EVENT, indent=2),
        help_text="A sample event, as JSON. Nothing is stored; no job, export or log entry is kept.",
    )

    def clean_event(self):
        try:
            value = json.loads(self.cleaned_data["event"])
        except ValueError as exc:
            raise forms.ValidationError(f"Not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("The event must be a JSON object.")
        return value


class PluginSourceFileInline(admin.StackedInline):
    model = PluginSourceFile
    extra = 0


@admin.register(Plugin)
class PluginAdmin(admin.ModelAdmin):
    list_display = ["name", "source_type", "builtin", "path", "organization", "capability_summary", "updated_at"]
    list_filter = ["source_type", "organization"]
    search_fields = ["name", "builtin", "path"]
    readonly_fields = ["capabilities", "plugin_json", "created_by", "created_at", "updated_at"]
    inlines = [PluginSourceFileInline]
    actions = ["reload_plugins"]

    @admin.display(description="capabilities")
    def capability_summary(self, plugin: Plugin) -> str:
        caps = plugin.capabilities or {}
        return ", ".join([*caps.get("methods", []), *caps.get("scheduled_tasks", []), *caps.get("jobs", [])])

    def save_related(self, request, form, formsets, change):
        """After the files are saved, detect the capabilities again from the code as it now is."""
        super().save_related(request, form, formsets, change)
        plugin = form.instance
        try:
            code = code_for(plugin)
            plugin.capabilities = inspect_code(code)
            plugin.plugin_json = code.manifest
            plugin.save()
        except PluginLoadError as exc:
            self.message_user(request, f"The plugin's code does not load: {exc}", messages.ERROR)

    @admin.action(description="Reload the selected plugins on every worker")
    def reload_plugins(self, request, queryset):
        for plugin in queryset:
            publish_reload(plugin_id=plugin.pk)
        self.message_user(request, f"Reloaded {queryset.count()} plugin(s).")


@admin.register(PluginConfig)
class PluginConfigAdmin(admin.ModelAdmin):
    list_display = ["id", "plugin", "project", "enabled", "order", "short_error", "updated_at", "test_link"]
    list_filter = ["enabled", "plugin", "project"]
    search_fields = ["plugin__name", "project__name"]
    readonly_fields = ["masked_config", "error", "created_at", "updated_at"]
    exclude = ["config"]
    actions = ["enable", "disable"]

    def get_urls(self):
        view = self.admin_site.admin_view(self.test_run)
        return [path("<int:config_id>/test/", view, name="plugins_pluginconfig_test"), *super().get_urls()]

    @admin.display(description="test")
    def test_link(self, config: PluginConfig) -> str:
        return format_html('<a href="{}">test run</a>', reverse("admin:plugins_pluginconfig_test", args=[config.pk]))

    def test_run(self, request, config_id: int):
        """Run process_event on a sample event on a worker, without side effects, and show what came out."""
        config = get_object_or_404(PluginConfig.objects.select_related("plugin", "project"), pk=config_id)
        form = TestRunForm(request.POST or None)
        result, no_worker = None, None
        if request.method == "POST" and form.is_valid():
            try:
                result = test_run_on_a_worker(config, form.cleaned_data["event"])
            except (NoWorkerAnswered, RedisUnavailable) as exc:
                no_worker = str(exc)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Test run of {config.plugin} on {config.project}",
            "config": config,
            "form": form,
            "result": result,
            "no_worker": no_worker,
            "output": json.dumps(result["event"], indent=2, default=str) if result and result["event"] else None,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/plugins/test_run.html", context)

    @admin.display(description="config (secrets masked)")
    def masked_config(self, config: PluginConfig):
        return mask_secrets(config.plugin.config_schema, config.config or {})

    @admin.display(description="error")
    def short_error(self, config: PluginConfig) -> str:
        return (config.error or {}).get("message", "")[:120]

    @admin.action(description="Enable the selected configs")
    def enable(self, request, queryset):
        for config in queryset:
            config.enabled, config.error = True, None
            config.save()

    @admin.action(description="Disable the selected configs")
    def disable(self, request, queryset):
        for config in queryset:
            config.enabled = False
            config.save()


@admin.register(PluginAttachment)
class PluginAttachmentAdmin(admin.ModelAdmin):
    list_display = ["key", "file_name", "content_type", "file_size", "plugin_config", "updated_at"]
    search_fields = ["key", "file_name"]
    exclude = ["contents"]
    readonly_fields = ["file_size"]


@admin.register(PluginStorage)
class PluginStorageAdmin(admin.ModelAdmin):
    list_display = ["key", "plugin_config"]
    search_fields = ["key"]


@admin.register(PluginLogEntry)
class PluginLogEntryAdmin(admin.ModelAdmin):
    list_display = ["timestamp", "plugin_config", "source", "type", "short_message"]
    list_filter = ["source", "type"]
    search_fields = ["message"]

    @admin.display(description="message")
    def short_message(self, entry: PluginLogEntry) -> str:
        return entry.message[:160]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(PluginJob)
class PluginJobAdmin(admin.ModelAdmin):
    list_display = ["name", "plugin_config", "status", "run_at", "attempts", "finished_at"]
    list_filter = ["status"]
    search_fields = ["name"]
    readonly_fields = ["created_at", "started_at", "finished_at", "attempts", "error"]
