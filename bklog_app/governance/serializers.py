"""Shapes of the governance API; definitions follow PostHog's, so its users feel at home."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from bklog_app.governance.models import EventDefinition, PlanViolation, PropertyDefinition, TrackingPlan
from pipeline.governance.plans import PlanError, compile_plan

MAX_TAGS = 50


class EventDefinitionSerializer(serializers.ModelSerializer):
    volume_30_day = serializers.SerializerMethodField(help_text="Events stored in the last 30 days.")

    class Meta:
        model = EventDefinition
        fields = ["id", "name", "volume_30_day", "created_at", "last_seen_at", "description", "tags", "verified"]
        read_only_fields = ["id", "name", "volume_30_day", "created_at", "last_seen_at"]

    @extend_schema_field(OpenApiTypes.INT)
    def get_volume_30_day(self, definition: EventDefinition) -> int:
        return self.context.get("volumes", {}).get(definition.name, 0)

    def validate_tags(self, value) -> list[str]:
        if not isinstance(value, list) or len(value) > MAX_TAGS or not all(isinstance(tag, str) for tag in value):
            raise serializers.ValidationError(f"tags must be a list of at most {MAX_TAGS} strings.")
        return value


class PropertyDefinitionSerializer(serializers.ModelSerializer):
    is_numerical = serializers.BooleanField(read_only=True)

    class Meta:
        model = PropertyDefinition
        fields = ["id", "name", "property_type", "is_numerical", "created_at", "last_seen_at", "description", "tags"]
        read_only_fields = fields


class DefinitionQuery(serializers.Serializer):
    search = serializers.CharField(required=False, allow_blank=True, help_text="Names containing this text.")


class PropertyDefinitionQuery(DefinitionQuery):
    event_names = serializers.JSONField(
        required=False, help_text='A JSON list of event names, e.g. ["signed_up"]: properties seen on any of them.'
    )

    def validate_event_names(self, value) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
            raise serializers.ValidationError('Must be a JSON list of event names, such as ["signed_up"].')
        return value


class EventSchemaSerializer(serializers.Serializer):
    schema = serializers.DictField(help_text="A JSON Schema for the event's properties object.")


class TrackingPlanSerializer(serializers.Serializer):
    """The plan as exported and imported: GET's body can be PUT back as it is."""

    mode = serializers.ChoiceField(choices=TrackingPlan.Mode.choices)
    allow_unplanned_events = serializers.BooleanField(default=True)
    on_unknown_property = serializers.ChoiceField(
        choices=TrackingPlan.OnUnknownProperty.choices, default=TrackingPlan.OnUnknownProperty.ALLOW
    )
    events = serializers.DictField(child=EventSchemaSerializer(), default=dict)
    version = serializers.IntegerField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True, allow_null=True)

    def validate_events(self, events: dict) -> dict:
        if _has_nul(events):
            raise serializers.ValidationError(
                "A name or a string in the plan contains a NUL character (\\u0000), which the database "
                "cannot store; remove it."
            )
        return events

    def validate(self, data: dict) -> dict:
        try:
            compile_plan(data)
        except PlanError as exc:
            raise serializers.ValidationError({"events": [str(exc)]}) from None
        return data


def _has_nul(value) -> bool:
    """Whether a JSON value holds U+0000 in a key or a string (PostgreSQL's jsonb refuses it)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in str(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


class CheckRequest(serializers.Serializer):
    event = serializers.CharField(max_length=400)
    properties = serializers.DictField(required=False, default=dict)
    plan = TrackingPlanSerializer(required=False, help_text="Check against this plan instead of the saved one.")


class CheckViolation(serializers.Serializer):
    rule = serializers.CharField()
    message = serializers.CharField()


class CheckResult(serializers.Serializer):
    outcome = serializers.ChoiceField(
        choices=["stored", "stored_with_violations", "stored_stripped", "dead_lettered"],
        help_text="What ingestion would do with the event under the plan's mode.",
    )
    planned = serializers.BooleanField()
    valid = serializers.BooleanField()
    violations = CheckViolation(many=True)
    unknown_properties = serializers.ListField(child=serializers.CharField())


class PlanViolationSerializer(serializers.ModelSerializer):
    class Meta:
        model = PlanViolation
        fields = ["id", "event", "rule", "count", "samples", "first_seen_at", "last_seen_at"]
        read_only_fields = fields
