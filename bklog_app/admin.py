from django.contrib import admin, messages
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from bklog_app.models import DeadLetter, IngestionWarning, Membership, Organization, PersonalAPIKey, Project
from pipeline.deadletters.replay import replay
from pipeline.ingestion import isolation
from pipeline.ingestion.projects import EPOCH_KEY
from pipeline.storage.clickhouse import ClickHouseUnavailable
from pipeline.storage.events import list_events

LATEST_EVENTS = 100


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]
    search_fields = ["name"]
    inlines = [MembershipInline]


class IngestionStateFilter(admin.SimpleListFilter):
    """The isolation state lives in Redis (pipeline/ingestion/isolation.py), not in a column."""

    title = "ingestion state"
    parameter_name = "ingestion_state"

    def lookups(self, request, model_admin):
        return [(state, state) for state in isolation.STATES]

    def queryset(self, request, queryset):
        if self.value() not in isolation.STATES:
            return queryset
        overflow = isolation.projects_in(isolation.OVERFLOW)
        if self.value() == isolation.OVERFLOW:
            return queryset.filter(pk__in=overflow)
        return queryset.exclude(pk__in=overflow)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = [
        "name", "organization", "api_token", "anonymize_ips", "rate_limit_per_minute", "ingestion_state",
        "created_at", "events_link",
    ]  # fmt: skip
    list_filter = ["organization", "anonymize_ips", "autocapture_opt_out", IngestionStateFilter]
    search_fields = ["name", "api_token"]
    readonly_fields = ["api_token", "ingestion_state", "created_at", "events_link"]
    actions = ["back_to_healthy"]
    fieldsets = [
        (None, {"fields": ["organization", "name", "api_token", "anonymize_ips", "rate_limit_per_minute",
                           "ingestion_state", "created_at", "events_link"]}),
        ("Browser SDKs (posthog-js)", {
            "description": "Sent to posthog-js in its remote config (GET /array/&lt;token&gt;/config); page views, "
            "page leaves and person profiles are posthog.init options (the project API's posthog_js_options).",
            "fields": ["autocapture_opt_out", "capture_pageview", "capture_pageleave", "default_identified_only",
                       "capture_performance_opt_in", "autocapture_web_vitals_opt_in",
                       "autocapture_exceptions_opt_in", "heatmaps_opt_in", "capture_dead_clicks"],
        }),
    ]  # fmt: skip

    def get_urls(self):
        view = self.admin_site.admin_view(self.latest_events)
        return [path("<int:project_id>/events/", view, name="bklog_app_project_events"), *super().get_urls()]

    @admin.action(description="Ingest the selected projects on the main queue again (healthy)")
    def back_to_healthy(self, request, queryset):
        ids = list(queryset.values_list("pk", flat=True))
        isolation.reset(ids, EPOCH_KEY)
        self.message_user(
            request,
            f"{len(ids)} project(s) healthy again; a slow plugin chain moves them aside again.",
            messages.SUCCESS,
        )

    @admin.display(description="ingestion state")
    def ingestion_state(self, project: Project) -> str:
        if not project.pk:
            return ""
        state = isolation.state_of(project.pk)
        return f"{state['state']}: {state['why']}" if state["state"] == isolation.OVERFLOW else state["state"]

    @admin.display(description="events")
    def events_link(self, project: Project) -> str:
        if not project.pk:
            return ""
        return format_html(
            '<a href="{}">latest events</a>', reverse("admin:bklog_app_project_events", args=[project.pk])
        )

    def latest_events(self, request, project_id: int):
        """The project's latest events, straight from ClickHouse."""
        project = get_object_or_404(Project, pk=project_id)
        error = None
        try:
            events = list_events(project.id, limit=LATEST_EVENTS)
        except ClickHouseUnavailable as exc:
            events, error = [], f"{exc}. Check ClickHouse (GET /health/ready), then reload this page."
        context = {
            **self.admin_site.each_context(request),
            "title": f"Latest events of {project}",
            "project": project,
            "events": events,
            "error": error,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/bklog_app/project_events.html", context)


@admin.register(PersonalAPIKey)
class PersonalAPIKeyAdmin(admin.ModelAdmin):
    list_display = ["mask", "user", "label", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["user__username", "label", "mask"]
    readonly_fields = ["key_hash", "mask", "created_at", "last_used_at"]


@admin.register(IngestionWarning)
class IngestionWarningAdmin(admin.ModelAdmin):
    list_display = ["type", "project", "event_uuid", "created_at"]
    list_filter = ["type", "project"]
    search_fields = ["event_uuid"]
    readonly_fields = ["project", "type", "event_uuid", "details", "created_at"]


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ["kind", "step", "project", "short_error", "created_at", "replayed_at"]
    list_filter = ["kind", "step", "project", ("replayed_at", admin.EmptyFieldListFilter)]
    search_fields = ["error"]
    readonly_fields = ["project", "kind", "step", "error", "payload", "context", "created_at", "replayed_at"]
    actions = ["replay_selected"]

    @admin.action(description="Replay the selected dead letters")
    def replay_selected(self, request, queryset):
        count = 0
        for letter in queryset.filter(replayed_at__isnull=True):
            replay(letter)
            count += 1
        skipped = queryset.count() - count
        note = f" ({skipped} already replayed, skipped)" if skipped else ""
        self.message_user(request, f"Queued {count} dead letter(s) again{note}.", messages.SUCCESS)

    @admin.display(description="error")
    def short_error(self, obj):
        return obj.error.splitlines()[0][:120] if obj.error else ""
