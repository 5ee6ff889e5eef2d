"""Definitions (described here, written by ingestion), tracking plans (edited, drafted, exported,
and an event checked against them) and their violations."""

import json

from django import forms
from django.contrib import admin, messages
from django.db.models import F
from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from bklog_app.governance.models import EventDefinition, EventProperty, PlanViolation, PropertyDefinition, TrackingPlan
from pipeline.governance.drafts import draft_plan
from pipeline.governance.plans import PlanError, check_event, compile_plan

PLAN_FIELDS = ("mode", "allow_unplanned_events", "on_unknown_property", "events")
SAMPLE = {"event": "signed_up", "properties": {"plan": "pro"}}


class IngestionWritten(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(EventDefinition)
class EventDefinitionAdmin(IngestionWritten):
    list_display = ["name", "project", "verified", "created_at", "last_seen_at"]
    list_filter = ["verified", "project"]
    search_fields = ["name", "description"]
    readonly_fields = ["project", "name", "created_at", "last_seen_at"]
    fields = ["project", "name", "description", "tags", "verified", "created_at", "last_seen_at"]


@admin.register(PropertyDefinition)
class PropertyDefinitionAdmin(IngestionWritten):
    list_display = ["name", "project", "property_type", "created_at", "last_seen_at"]
    list_filter = ["property_type", "project"]
    search_fields = ["name", "description"]
    readonly_fields = ["project", "name", "property_type", "created_at", "last_seen_at"]
    fields = ["project", "name", "property_type", "description", "tags", "created_at", "last_seen_at"]


@admin.register(EventProperty)
class EventPropertyAdmin(IngestionWritten):
    list_display = ["event", "property", "project"]
    list_filter = ["project"]
    search_fields = ["event", "property"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(PlanViolation)
class PlanViolationAdmin(IngestionWritten):
    list_display = ["event", "rule", "count", "project", "first_seen_at", "last_seen_at"]
    list_filter = ["project", "rule"]
    search_fields = ["event", "rule"]
    ordering = ["-count"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return True  # to start counting afresh once the cause is fixed


class TrackingPlanForm(forms.ModelForm):
    class Meta:
        model = TrackingPlan
        fields = ["project", *PLAN_FIELDS]

    def clean(self):
        data = super().clean()
        if not self.errors:
            try:
                compile_plan({field: data.get(field) for field in PLAN_FIELDS})
            except PlanError as exc:
                raise forms.ValidationError(str(exc)) from None
        return data


class CheckForm(forms.Form):
    event = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 10, "cols": 100}),
        initial=json.dumps(SAMPLE, indent=2),
        help_text='{"event": "signed_up", "properties": {...}}. Nothing is stored or counted.',
    )

    def clean_event(self):
        try:
            value = json.loads(self.cleaned_data["event"])
        except ValueError as exc:
            raise forms.ValidationError(f"Not JSON: {exc}") from None
        if not isinstance(value, dict) or not isinstance(value.get("event"), str):
            raise forms.ValidationError('Give a JSON object with an "event" name, e.g. {"event": "signed_up"}.')
        if not isinstance(value.get("properties", {}), dict):
            raise forms.ValidationError("properties must be a JSON object.")
        return value


@admin.register(TrackingPlan)
class TrackingPlanAdmin(admin.ModelAdmin):
    form = TrackingPlanForm
    list_display = ["project", "mode", "allow_unplanned_events", "on_unknown_property", "planned", "version",
                    "updated_at", "links"]  # fmt: skip
    list_filter = ["mode", "project"]
    search_fields = ["project__name"]
    readonly_fields = ["version", "updated_at"]
    actions = ["draft_from_definitions"]

    def save_model(self, request, obj, form, change) -> None:
        if change:
            obj.version = F("version") + 1
        super().save_model(request, obj, form, change)
        obj.refresh_from_db()

    def get_urls(self):
        return [
            path(
                "<int:plan_id>/check/",
                self.admin_site.admin_view(self.check_event_view),
                name="governance_trackingplan_check",
            ),
            path(
                "<int:plan_id>/export/",
                self.admin_site.admin_view(self.export_view),
                name="governance_trackingplan_export",
            ),
            *super().get_urls(),
        ]

    @admin.display(description="planned events")
    def planned(self, plan: TrackingPlan) -> int:
        return len(plan.events or {})

    @admin.display(description="")
    def links(self, plan: TrackingPlan) -> str:
        return format_html(
            '<a href="{}">check an event</a> · <a href="{}">export JSON</a>',
            reverse("admin:governance_trackingplan_check", args=[plan.pk]),
            reverse("admin:governance_trackingplan_export", args=[plan.pk]),
        )

    @admin.action(description="Replace the planned events with a draft from the definitions")
    def draft_from_definitions(self, request, queryset):
        for plan in queryset:
            plan.events = draft_plan(plan.project_id)["events"]
            plan.version = F("version") + 1
            plan.save()
        messages.success(request, f"Drafted {queryset.count()} plan(s) from their definitions; review them.")

    def export_view(self, request, plan_id: int):
        plan = get_object_or_404(TrackingPlan, pk=plan_id)
        body = {field: getattr(plan, field) for field in PLAN_FIELDS}
        response = JsonResponse(body, json_dumps_params={"indent": 2})
        response["Content-Disposition"] = f'attachment; filename="tracking-plan-{plan.project_id}.json"'
        return response

    def check_event_view(self, request, plan_id: int):
        """Check an event against the plan, as ingestion would, without storing anything."""
        plan = get_object_or_404(TrackingPlan.objects.select_related("project"), pk=plan_id)
        form = CheckForm(request.POST or None)
        result = None
        if request.method == "POST" and form.is_valid():
            compiled = compile_plan({field: getattr(plan, field) for field in PLAN_FIELDS})
            sent = form.cleaned_data["event"]
            result = check_event(compiled, sent["event"], sent.get("properties") or {})
        context = {
            **self.admin_site.each_context(request),
            "title": f"Check an event against the tracking plan of {plan.project}",
            "plan": plan,
            "form": form,
            "result": result,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/governance/check.html", context)
