"""What the exports API accepts and shows."""

from datetime import UTC

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from bklog_app.exports.models import ExportJob, ExportStatus
from pipeline.ingestion.timestamps import EPOCH, parse_iso

MAX_EVENT_NAMES = 100
MAX_PROPERTIES = 20


@extend_schema_field(OpenApiTypes.DATETIME)
class IsoTimeField(serializers.Field):
    """An ISO 8601 time (naive means UTC), such as 2024-01-31T12:00:00Z, taken as UTC. Python reads
    offsets up to 23:59, PostgreSQL stores them only up to 15:59: a time is converted, not kept
    with the offset it came with, and one whose UTC falls past year 9999 is refused."""

    default_error_messages = {"invalid": "Must be an ISO 8601 time, such as 2024-01-31T12:00:00Z."}

    def to_internal_value(self, data):
        parsed = parse_iso(data) if isinstance(data, str) else None
        if parsed is None:
            self.fail("invalid")
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            self.fail("invalid")

    def to_representation(self, value):
        return value.isoformat().replace("+00:00", "Z")


class RangeSerializer(serializers.Serializer):
    after = IsoTimeField(help_text="Events at or after this time (ISO 8601).")
    before = IsoTimeField(help_text="Events before this time (ISO 8601).")

    def validate_after(self, value):
        if value < EPOCH:
            raise serializers.ValidationError("Events are stored from 1970-01-01T00:00:00Z on; give a later time.")
        return value

    def validate(self, attrs):
        if attrs["after"] >= attrs["before"]:
            raise serializers.ValidationError({"before": "'before' must be later than 'after'."}, code="invalid_range")
        return attrs


class ExportJobCreateSerializer(RangeSerializer):
    """POST /api/projects/<id>/exports/ {"format", "after", "before", "events"?, "properties"?}."""

    format = serializers.ChoiceField(choices=ExportJob.Format.choices)
    events = serializers.ListField(
        child=serializers.CharField(max_length=400), required=False, default=list, max_length=MAX_EVENT_NAMES
    )
    properties = serializers.DictField(required=False, default=dict)

    def validate_properties(self, value):
        if len(value) > MAX_PROPERTIES:
            raise serializers.ValidationError(f"At most {MAX_PROPERTIES} properties can be matched.")
        for key, item in value.items():
            if not key:
                raise serializers.ValidationError("Property names must not be empty.")
            if isinstance(item, (dict, list)):
                raise serializers.ValidationError(
                    f"Property {key!r}: give a string, number, boolean or null; values are matched by equality."
                )
        return value

    def validate_events(self, value):
        return list(dict.fromkeys(value))


class ExportStateMixin(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    status = serializers.ChoiceField(choices=ExportStatus.choices, read_only=True)
    after = IsoTimeField(read_only=True)
    before = IsoTimeField(read_only=True)
    rows_exported = serializers.IntegerField(read_only=True)
    estimated_rows = serializers.IntegerField(read_only=True, allow_null=True)
    progress = serializers.IntegerField(read_only=True)
    error = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField(read_only=True)
    started_at = serializers.DateTimeField(read_only=True, allow_null=True)
    finished_at = serializers.DateTimeField(read_only=True, allow_null=True)

    def get_error(self, job) -> str | None:
        return job.error or None


class ExportJobSerializer(ExportStateMixin):
    format = serializers.CharField(read_only=True)
    events = serializers.ListField(read_only=True)
    properties = serializers.DictField(read_only=True)
    file_size = serializers.IntegerField(read_only=True, allow_null=True)
    expires_at = serializers.DateTimeField(read_only=True, allow_null=True)
    download_url = serializers.SerializerMethodField()

    def get_download_url(self, job: ExportJob) -> str | None:
        if job.status != ExportStatus.SUCCEEDED:
            return None
        return reverse(
            "export-download", kwargs={"project_id": job.project_id, "export_id": job.pk},
            request=self.context.get("request"),
        )  # fmt: skip


class HistoricalExportSerializer(ExportStateMixin):
    plugin_config = serializers.IntegerField(source="plugin_config_id", read_only=True)
    batch_attempt = serializers.IntegerField(read_only=True)


class ExportPage(serializers.Serializer):
    results = ExportJobSerializer(many=True)


class HistoricalExportPage(serializers.Serializer):
    results = HistoricalExportSerializer(many=True)
