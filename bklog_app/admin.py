from django.contrib import admin

from bklog_app.models import DeadLetter, IngestionWarning, Membership, Organization, PersonalAPIKey, Project


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]
    search_fields = ["name"]
    inlines = [MembershipInline]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "organization", "api_token", "anonymize_ips", "rate_limit_per_minute", "created_at"]
    list_filter = ["organization", "anonymize_ips"]
    search_fields = ["name", "api_token"]
    readonly_fields = ["api_token", "created_at"]


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
    list_filter = ["kind", "step", "project"]
    readonly_fields = ["project", "kind", "step", "error", "payload", "context", "created_at", "replayed_at"]

    @admin.display(description="error")
    def short_error(self, obj):
        return obj.error.splitlines()[0][:120] if obj.error else ""
