"""Projects: create, update, delete, rotate the capture token; the browser SDK settings.

The SDK settings (autocapture_opt_out, capture_pageview, ...: bklog_app.models.Project) reach
posthog-js through the remote config (bklog_app/sdk/); the three it takes only from its init
options are in the read-only `posthog_js_options`, to paste into `posthog.init`.

The read-only `ingestion_state` is the project's isolation state (pipeline/ingestion/isolation.py):
`healthy`, or `overflow` while its plugin chain is slow or failing, with since when and why.
"""

from datetime import UTC, datetime

from django.db import transaction
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from bklog_app.api.pagination import Pagination
from bklog_app.api.permissions import require_admin
from bklog_app.api.scoping import project_for, projects_for
from bklog_app.models import Organization, Project, generate_capture_token
from bklog_app.sdk.remote_config import posthog_js_options
from pipeline.ingestion import isolation
from pipeline.redis import REDIS_ERRORS

SDK_SETTINGS = [
    "autocapture_opt_out",
    "capture_pageview",
    "capture_pageleave",
    "default_identified_only",
    "capture_performance_opt_in",
    "autocapture_web_vitals_opt_in",
    "autocapture_exceptions_opt_in",
    "heatmaps_opt_in",
    "capture_dead_clicks",
]


class PostHogJsOptions(serializers.Serializer):
    capture_pageview = serializers.BooleanField()
    capture_pageleave = serializers.BooleanField()
    person_profiles = serializers.ChoiceField(choices=["identified_only", "always"])


class IngestionState(serializers.Serializer):
    state = serializers.ChoiceField(choices=[*isolation.STATES, "unknown"], help_text="unknown: Redis did not answer")
    since = serializers.DateTimeField(allow_null=True, help_text="null: never moved")
    why = serializers.CharField(allow_null=True)


class ProjectSerializer(serializers.ModelSerializer):
    organization = serializers.PrimaryKeyRelatedField(queryset=Organization.objects.all())
    posthog_js_options = serializers.SerializerMethodField()
    ingestion_state = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = [
            "id", "organization", "name", "api_token", "anonymize_ips", "rate_limit_per_minute",
            *SDK_SETTINGS, "posthog_js_options", "ingestion_state", "created_at",
        ]  # fmt: skip
        read_only_fields = ["id", "api_token", "created_at"]

    @extend_schema_field(PostHogJsOptions)
    def get_posthog_js_options(self, project: Project) -> dict:
        return posthog_js_options(project)

    @extend_schema_field(IngestionState)
    def get_ingestion_state(self, project: Project) -> dict:
        try:
            state = isolation.state_of(project.id)
        except REDIS_ERRORS:
            return {"state": "unknown", "since": None, "why": None}
        since = state["since"]
        return {**state, "since": datetime.fromtimestamp(since, UTC).isoformat() if since else None}

    def get_fields(self):
        fields = super().get_fields()
        request = self.context.get("request")
        if request is not None and request.user.is_authenticated:
            fields["organization"].queryset = Organization.objects.filter(memberships__user=request.user)
        if self.instance is not None:
            fields["organization"].read_only = True
        return fields


class ProjectList(generics.ListCreateAPIView):
    serializer_class = ProjectSerializer
    pagination_class = Pagination

    def get_queryset(self):
        return projects_for(self.request.user).order_by("id")

    def perform_create(self, serializer):
        require_admin(self.request.user, serializer.validated_data["organization"])
        serializer.save()


class ProjectDetail(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = ProjectSerializer

    def get_object(self):
        return project_for(self.request.user, self.kwargs["project_id"])

    def perform_update(self, serializer):
        require_admin(self.request.user, serializer.instance.organization)
        serializer.save()

    def perform_destroy(self, instance):
        require_admin(self.request.user, instance.organization)
        instance.delete()


class RotateToken(APIView):
    """POST: a new capture token; the old one stops working at once, everywhere."""

    serializer_class = ProjectSerializer

    @extend_schema(request=None, responses=ProjectSerializer)
    @transaction.atomic
    def post(self, request, project_id: int):
        project = project_for(request.user, project_id)
        require_admin(request.user, project.organization)
        project.api_token = generate_capture_token()
        project.save(update_fields=["api_token"])
        return Response(ProjectSerializer(project, context={"request": request}).data)
