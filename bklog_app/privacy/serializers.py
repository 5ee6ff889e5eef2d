"""What the privacy API accepts and shows."""

from datetime import UTC

from rest_framework import serializers

from bklog_app.exports.serializers import IsoTimeField
from bklog_app.privacy.models import DeletionRequest, Suppression


class DeletionCreateSerializer(serializers.Serializer):
    """POST /api/projects/<id>/deletions/: the events to delete, and whether to wait for a confirm."""

    event = serializers.CharField(required=False, max_length=200, help_text="Only events of this name.")
    distinct_id = serializers.CharField(required=False, max_length=400, help_text="Only events of this distinct id.")
    after = IsoTimeField(required=False, help_text="Only events at or after this time (ISO 8601).")
    before = IsoTimeField(required=False, help_text="Only events before this time (ISO 8601).")
    dry_run = serializers.BooleanField(
        required=False, default=True, help_text="Count first and wait for POST .../confirm/ (the default)."
    )

    def validate(self, attrs):
        if not any(key in attrs for key in ("event", "distinct_id", "after", "before")):
            raise serializers.ValidationError(
                "Give at least one of event, distinct_id, after, before; deleting all of a project's events "
                "is not done by filter.",
                code="empty_filter",
            )
        if "after" in attrs and "before" in attrs and attrs["after"] >= attrs["before"]:
            raise serializers.ValidationError({"before": "'before' must be later than 'after'."}, code="invalid_range")
        return attrs

    def spec(self) -> dict:
        data = self.validated_data
        spec = {key: data[key] for key in ("event", "distinct_id") if key in data}
        for key in ("after", "before"):
            if key in data:
                spec[key] = data[key].astimezone(UTC).isoformat().replace("+00:00", "Z")
        return spec


class DeletionRequestSerializer(serializers.ModelSerializer):
    requested_by = serializers.SerializerMethodField()

    class Meta:
        model = DeletionRequest
        fields = [
            "id", "kind", "filter", "dry_run", "suppress", "status", "dry_run_count", "rows_affected", "progress",
            "parts_total", "error", "requested_by", "created_at", "started_at", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_requested_by(self, request: DeletionRequest) -> str | None:
        return request.requested_by.get_username() if request.requested_by else None


class DeletionPage(serializers.Serializer):
    results = DeletionRequestSerializer(many=True)


class SuppressionCreateSerializer(serializers.Serializer):
    distinct_id = serializers.CharField(max_length=400)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")


class SuppressionSerializer(serializers.ModelSerializer):
    active = serializers.SerializerMethodField()

    class Meta:
        model = Suppression
        fields = [
            "id", "distinct_id", "reason", "deletion_request", "active", "events_dropped", "last_dropped_at",
            "created_at", "lifted_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_active(self, item: Suppression) -> bool:
        return item.lifted_at is None


class SuppressionPage(serializers.Serializer):
    results = SuppressionSerializer(many=True)
