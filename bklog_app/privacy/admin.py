"""Admin for deletion requests and suppressions: lists with filters, the confirm of a dry run and
the lift of a suppression as actions. Requests are made over the API or from the person admin."""

from django.contrib import admin, messages

from bklog_app.admin_base import ReadOnlyAdmin
from bklog_app.privacy import service
from bklog_app.privacy.models import DeletionRequest, Suppression


@admin.register(DeletionRequest)
class DeletionRequestAdmin(ReadOnlyAdmin):
    list_display = [
        "id", "project", "kind", "status", "dry_run_count", "rows_affected", "progress", "requested_by", "created_at",
        "finished_at",
    ]  # fmt: skip
    list_filter = ["status", "kind", "project"]
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in DeletionRequest._meta.fields]
    actions = ["confirm_dry_runs"]

    @admin.action(description="Confirm the selected dry runs (delete what they counted)")
    def confirm_dry_runs(self, request, queryset) -> None:
        confirmed = sum(service.confirm(item) for item in queryset)
        self.message_user(request, f"Confirmed {confirmed} deletion request(s).")
        if confirmed < len(queryset):
            self.message_user(
                request, "Only counted dry runs can be confirmed; the others were left.", messages.WARNING
            )


@admin.register(Suppression)
class SuppressionAdmin(ReadOnlyAdmin):
    list_display = ["distinct_id", "project", "reason", "events_dropped", "last_dropped_at", "created_at", "lifted_at"]
    list_filter = ["project", ("lifted_at", admin.EmptyFieldListFilter)]
    search_fields = ["distinct_id"]
    readonly_fields = [field.name for field in Suppression._meta.fields]
    actions = ["lift"]

    @admin.action(description="Lift the selected suppressions (let their events in again)")
    def lift(self, request, queryset) -> None:
        lifted = sum(service.lift_suppression(item, request.user) for item in queryset)
        self.message_user(request, f"Lifted {lifted} suppression(s).")
