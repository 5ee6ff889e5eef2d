"""Read-only admin: persons are written by ingestion; deleted through the API or the actions
here, which delete their events too (and may suppress their distinct ids: docs/privacy.md)."""

from django.contrib import admin

from bklog_app.admin_base import ReadOnlyAdmin
from bklog_app.persons.models import Person, PersonDistinctId
from bklog_app.privacy import service


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
    actions = ["delete_with_events", "delete_with_events_and_suppress"]

    @admin.action(description="Delete the selected persons and their events")
    def delete_with_events(self, request, queryset) -> None:
        self._delete(request, queryset, suppress=False)

    @admin.action(description="Delete the selected persons and their events; suppress their distinct ids")
    def delete_with_events_and_suppress(self, request, queryset) -> None:
        self._delete(request, queryset, suppress=True)

    def _delete(self, request, queryset, *, suppress: bool) -> None:
        deleted = 0
        for person in queryset.select_related("project"):
            try:
                service.delete_person(person.project, person.uuid, request.user, delete_events=True, suppress=suppress)
                deleted += 1
            except service.PersonGone:
                pass
        self.message_user(request, f"Deleted {deleted} person(s); their events go once the deletion requests complete.")


@admin.register(PersonDistinctId)
class PersonDistinctIdAdmin(ReadOnlyAdmin):
    list_display = ["distinct_id", "person", "project"]
    list_filter = ["project"]
    search_fields = ["distinct_id"]
    readonly_fields = ["distinct_id", "person", "project"]
