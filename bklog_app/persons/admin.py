"""Read-only admin: persons are written by ingestion, and deleted through the API."""

from django.contrib import admin

from bklog_app.persons.models import Person, PersonDistinctId


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class DistinctIdInline(admin.TabularInline):
    model = PersonDistinctId
    fields = ["distinct_id"]
    readonly_fields = ["distinct_id"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Person)
class PersonAdmin(ReadOnlyAdmin):
    list_display = ["uuid", "project", "is_identified", "created_at", "version"]
    list_filter = ["is_identified", "project"]
    search_fields = ["uuid", "distinct_ids__distinct_id"]
    readonly_fields = ["uuid", "project", "properties", "created_at", "is_identified", "version"]
    inlines = [DistinctIdInline]


@admin.register(PersonDistinctId)
class PersonDistinctIdAdmin(ReadOnlyAdmin):
    list_display = ["distinct_id", "person", "project"]
    list_filter = ["project"]
    search_fields = ["distinct_id"]
    readonly_fields = ["distinct_id", "person", "project"]
