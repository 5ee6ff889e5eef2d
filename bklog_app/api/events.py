"""GET /api/projects/<id>/events/: stored events from ClickHouse, newest first, keyset-paged."""

import base64

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from bklog_app.api.scoping import project_for
from pipeline.ingestion.timestamps import parse_iso, to_ms
from pipeline.persons.overrides import apply_person_overrides
from pipeline.storage.events import MAX_CURSOR_MS, list_events

MAX_LIMIT = 1000


class EventQuery(serializers.Serializer):
    event = serializers.CharField(required=False, allow_blank=True, default="")
    distinct_id = serializers.CharField(required=False, allow_blank=True, default="")
    after = serializers.CharField(required=False, help_text="ISO 8601; events at or after it.")
    before = serializers.CharField(required=False, help_text="ISO 8601; events before it.")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=MAX_LIMIT, default=100)
    cursor = serializers.CharField(required=False)

    def validate_after(self, value):
        return _parse_time(value, "after")

    def validate_before(self, value):
        return _parse_time(value, "before")

    def validate_cursor(self, value):
        try:
            ms, uuid = base64.urlsafe_b64decode(value.encode()).decode().split("|", 1)
            return int(ms), uuid
        except ValueError:
            raise serializers.ValidationError("Invalid cursor; use the `next` link as given.") from None


def _parse_time(value: str, name: str) -> int:
    parsed = parse_iso(value)
    if parsed is None:
        raise serializers.ValidationError(f"'{name}' must be an ISO 8601 time, such as 2024-01-31T12:00:00Z.")
    return to_ms(parsed)


class StoredEvent(serializers.Serializer):
    uuid = serializers.UUIDField()
    event = serializers.CharField()
    distinct_id = serializers.CharField()
    properties = serializers.DictField()
    timestamp = serializers.CharField(help_text="ISO 8601 UTC with milliseconds")
    created_at = serializers.CharField()
    person_id = serializers.UUIDField(allow_null=True)
    person_properties = serializers.DictField()
    elements_chain = serializers.CharField(allow_blank=True)


class EventPage(serializers.Serializer):
    results = StoredEvent(many=True)
    next = serializers.URLField(allow_null=True)


class EventListView(APIView):
    @extend_schema(parameters=[EventQuery], responses=EventPage)
    def get(self, request, project_id: int):
        project = project_for(request.user, project_id)
        query = EventQuery(data=request.query_params)
        if not query.is_valid():
            raise ValidationError(query.errors)
        params = query.validated_data
        limit = params["limit"]
        rows = list_events(
            project.id,
            event=params["event"],
            distinct_id=params["distinct_id"],
            after_ms=params.get("after", 0),
            before_ms=params.get("before", MAX_CURSOR_MS),
            cursor=params.get("cursor"),
            limit=limit + 1,
        )
        has_more = len(rows) > limit
        rows = rows[:limit]
        next_url = None
        if has_more:
            last = rows[-1]
            cursor = base64.urlsafe_b64encode(f"{last['timestamp_ms']}|{last['uuid']}".encode()).decode()
            query_params = request.query_params.copy()
            query_params["cursor"] = cursor
            next_url = request.build_absolute_uri(f"{request.path}?{query_params.urlencode()}")
        for row in rows:
            row.pop("timestamp_ms", None)
        # An event's stored person may since have been merged into another: show the current one.
        apply_person_overrides(project.id, rows)
        return Response({"results": rows, "next": next_url})
