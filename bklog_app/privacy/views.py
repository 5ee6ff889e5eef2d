"""/api/projects/<id>/deletions/ and /api/projects/<id>/suppressions/: thin views over
bklog_app.privacy.service. Like every project resource, only members of the project's
organization see them (anyone else gets a 404)."""

from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import APIView

from bklog_app.api.scoping import project_for
from bklog_app.privacy import service
from bklog_app.privacy.models import DeletionRequest, Suppression
from bklog_app.privacy.serializers import (
    DeletionCreateSerializer,
    DeletionPage,
    DeletionRequestSerializer,
    SuppressionCreateSerializer,
    SuppressionPage,
    SuppressionSerializer,
)

MAX_LIST_LIMIT = 1000
CONFLICT = OpenApiResponse(description="The request's status does not allow this (error body).")


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "invalid_status"


class ListQuery(serializers.Serializer):
    limit = serializers.IntegerField(required=False, min_value=1, max_value=MAX_LIST_LIMIT, default=100)


class SuppressionQuery(ListQuery):
    active = serializers.BooleanField(required=False, allow_null=True, default=None)


def _deletion_for(request, project_id, deletion_id) -> DeletionRequest:
    project = project_for(request.user, project_id)
    try:
        return DeletionRequest.objects.select_related("requested_by").get(pk=int(deletion_id), project=project)
    except (DeletionRequest.DoesNotExist, ValueError, TypeError):
        raise Http404("No such deletion request.") from None


class DeletionListView(APIView):
    @extend_schema(operation_id="projects_deletions_list", parameters=[ListQuery], responses=DeletionPage)
    def get(self, request, project_id: int):
        project = project_for(request.user, project_id)
        query = ListQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        items = DeletionRequest.objects.filter(project=project).select_related("requested_by")
        return Response({"results": DeletionRequestSerializer(items[: query.validated_data["limit"]], many=True).data})

    @extend_schema(request=DeletionCreateSerializer, responses={202: DeletionRequestSerializer})
    def post(self, request, project_id: int):
        project = project_for(request.user, project_id)
        serializer = DeletionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        item = service.delete_events(
            project, serializer.spec(), request.user, dry_run=serializer.validated_data["dry_run"]
        )
        return Response(DeletionRequestSerializer(item).data, status=status.HTTP_202_ACCEPTED)


class DeletionDetailView(APIView):
    @extend_schema(responses=DeletionRequestSerializer)
    def get(self, request, project_id: int, deletion_id: int):
        return Response(DeletionRequestSerializer(_deletion_for(request, project_id, deletion_id)).data)


class DeletionConfirmView(APIView):
    @extend_schema(request=None, responses={202: DeletionRequestSerializer, 409: CONFLICT})
    def post(self, request, project_id: int, deletion_id: int):
        item = _deletion_for(request, project_id, deletion_id)
        if not service.confirm(item):
            raise Conflict(f"This deletion request is {item.status}; only a counted dry run can be confirmed.")
        return Response(DeletionRequestSerializer(item).data, status=status.HTTP_202_ACCEPTED)


class SuppressionListView(APIView):
    @extend_schema(operation_id="projects_suppressions_list", parameters=[SuppressionQuery], responses=SuppressionPage)
    def get(self, request, project_id: int):
        project = project_for(request.user, project_id)
        query = SuppressionQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        items = Suppression.objects.filter(project=project)
        active = query.validated_data["active"]
        if active is not None:
            items = items.filter(lifted_at__isnull=active)
        return Response({"results": SuppressionSerializer(items[: query.validated_data["limit"]], many=True).data})

    @extend_schema(request=SuppressionCreateSerializer, responses={201: SuppressionSerializer})
    def post(self, request, project_id: int):
        project = project_for(request.user, project_id)
        serializer = SuppressionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        item = service.add_suppression(
            project, serializer.validated_data["distinct_id"], request.user, reason=serializer.validated_data["reason"]
        )
        return Response(SuppressionSerializer(item).data, status=status.HTTP_201_CREATED)


class SuppressionLiftView(APIView):
    @extend_schema(request=None, responses={200: SuppressionSerializer, 409: CONFLICT})
    def post(self, request, project_id: int, suppression_id: int):
        project = project_for(request.user, project_id)
        try:
            item = Suppression.objects.get(pk=int(suppression_id), project=project)
        except (Suppression.DoesNotExist, ValueError, TypeError):
            raise Http404("No such suppression.") from None
        if not service.lift_suppression(item, request.user):
            raise Conflict("This suppression was lifted already.", code="lifted")
        return Response(SuppressionSerializer(item).data)
