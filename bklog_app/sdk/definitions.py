"""Flag definitions for server SDKs' local evaluation: `GET /flags/definitions?token=<project token>`
(posthog-node, posthog-python) and the older `/api/feature_flag/local_evaluation`.

An SDK given a personal API key polls this every 30 seconds to evaluate flags itself. bklog has
no feature flags, so the answer is PostHog's for a project without any: no flags, no group
types, no cohorts. It is a REST API view: the personal API key authenticates
(`Authorization: Bearer <key>`, 401 without a valid one) and the token must be a project of the
key's user (404 otherwise, as for project ids).
"""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from bklog_app.api.scoping import projects_for


class FlagDefinitions(serializers.Serializer):
    flags = serializers.ListField(child=serializers.DictField())
    group_type_mapping = serializers.DictField()
    cohorts = serializers.DictField()


class LocalEvaluation(APIView):
    """GET: the project's flag definitions (none: bklog has no feature flags)."""

    @extend_schema(
        parameters=[
            OpenApiParameter("token", str, required=True, description="The project's capture token."),
            OpenApiParameter("send_cohorts", str, required=False, description="Accepted and ignored."),
        ],
        responses=FlagDefinitions,
    )
    def get(self, request):
        token = request.query_params.get("token", "").strip()
        if not token:
            raise ValidationError({"token": ["The project's token is required (query parameter token)."]})
        if "\x00" in token or not projects_for(request.user).filter(api_token=token).exists():
            raise NotFound("No project of yours has this token.")
        return Response({"flags": [], "group_type_mapping": {}, "cohorts": {}})
