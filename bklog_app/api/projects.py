"""Projects: create, update, delete, rotate the capture token."""

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from bklog_app.api.pagination import Pagination
from bklog_app.api.permissions import require_admin
from bklog_app.api.scoping import project_for, projects_for
from bklog_app.models import Organization, Project, generate_capture_token


class ProjectSerializer(serializers.ModelSerializer):
    organization = serializers.PrimaryKeyRelatedField(queryset=Organization.objects.all())

    class Meta:
        model = Project
        fields = ["id", "organization", "name", "api_token", "anonymize_ips", "rate_limit_per_minute", "created_at"]
        read_only_fields = ["id", "api_token", "created_at"]

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
