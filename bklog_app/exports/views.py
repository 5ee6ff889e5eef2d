"""/api/projects/<id>/exports/ and .../plugin_configs/<id>/historical_exports/: thin views over
pipeline.exports.control. Every export belongs to a project, and only members of the project's
organization see it (anyone else gets a 404, as for every project resource)."""

from django.http import FileResponse, Http404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from bklog_app.api.scoping import project_for
from bklog_app.exports.models import ExportJob, ExportStatus, HistoricalExport
from bklog_app.exports.serializers import (
    ExportJobCreateSerializer,
    ExportJobSerializer,
    ExportPage,
    HistoricalExportPage,
    HistoricalExportSerializer,
    RangeSerializer,
)
from bklog_app.plugins.models import PluginConfig
from pipeline.exports import control, files

MAX_LIST_LIMIT = 1000
CONFLICT = OpenApiResponse(description="The export's status does not allow this (error body).")


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "invalid_status"


class Gone(APIException):
    status_code = status.HTTP_410_GONE
    default_code = "expired"


class ListQuery(serializers.Serializer):
    limit = serializers.IntegerField(required=False, min_value=1, max_value=MAX_LIST_LIMIT, default=100)


def _export_for(request, project_id, export_id) -> ExportJob:
    project = project_for(request.user, project_id)
    try:
        return ExportJob.objects.select_related("project").get(pk=int(export_id), project=project)
    except (ExportJob.DoesNotExist, ValueError, TypeError):
        raise Http404("No such export.") from None


def _historical_for(request, project_id, config_id, export_id) -> HistoricalExport:
    project = project_for(request.user, project_id)
    try:
        return HistoricalExport.objects.select_related("project").get(
            pk=int(export_id), project=project, plugin_config_id=int(config_id)
        )
    except (HistoricalExport.DoesNotExist, ValueError, TypeError):
        raise Http404("No such historical export.") from None


def _limit(request) -> int:
    query = ListQuery(data=request.query_params)
    query.is_valid(raise_exception=True)
    return query.validated_data["limit"]


def _apply(action, job):
    try:
        return action(job)
    except control.InvalidTransition as exc:
        raise Conflict(str(exc), code=exc.code) from None


# --- file exports ----------------------------------------------------------------------------


class ExportListView(APIView):
    @extend_schema(operation_id="projects_exports_list", parameters=[ListQuery], responses=ExportPage)
    def get(self, request, project_id: int):
        project = project_for(request.user, project_id)
        jobs = ExportJob.objects.filter(project=project).order_by("-created_at", "-id")[: _limit(request)]
        return Response({"results": ExportJobSerializer(jobs, many=True, context={"request": request}).data})

    @extend_schema(request=ExportJobCreateSerializer, responses={201: ExportJobSerializer})
    def post(self, request, project_id: int):
        project = project_for(request.user, project_id)
        serializer = ExportJobCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = control.start(ExportJob(project=project, requested_by=request.user, **serializer.validated_data))
        return Response(ExportJobSerializer(job, context={"request": request}).data, status=status.HTTP_201_CREATED)


class ExportDetailView(APIView):
    @extend_schema(responses=ExportJobSerializer)
    def get(self, request, project_id: int, export_id: int):
        job = _export_for(request, project_id, export_id)
        return Response(ExportJobSerializer(job, context={"request": request}).data)


class ExportResumeView(APIView):
    @extend_schema(request=None, responses={200: ExportJobSerializer, 409: CONFLICT})
    def post(self, request, project_id: int, export_id: int):
        job = _apply(control.resume, _export_for(request, project_id, export_id))
        return Response(ExportJobSerializer(job, context={"request": request}).data)


class ExportCancelView(APIView):
    @extend_schema(request=None, responses={200: ExportJobSerializer, 409: CONFLICT})
    def post(self, request, project_id: int, export_id: int):
        job = _apply(control.cancel, _export_for(request, project_id, export_id))
        return Response(ExportJobSerializer(job, context={"request": request}).data)


class ExportDownloadView(APIView):
    """Streams the gzipped file; 410 once the export expired, 409 before it succeeded."""

    @extend_schema(
        responses={
            (200, "application/gzip"): OpenApiResponse(OpenApiTypes.BINARY, description="The gzipped file."),
            409: CONFLICT,
            410: OpenApiResponse(description="The export expired; its file was deleted (error body)."),
        }
    )
    def get(self, request, project_id: int, export_id: int):
        job = _export_for(request, project_id, export_id)
        expired = job.status == ExportStatus.EXPIRED or (
            job.expires_at is not None and job.expires_at <= timezone.now()
        )
        if expired:
            raise Gone("This export's file has expired and was deleted; start a new export.")
        if job.status != ExportStatus.SUCCEEDED:
            raise Conflict(f"This export is {job.status}; its file can be downloaded once it has succeeded.")
        try:
            fileobj = open(files.path_for(job.file_name), "rb")  # noqa: SIM115 - FileResponse closes it
        except FileNotFoundError:
            raise Gone("This export's file is gone; start a new export.") from None
        return FileResponse(
            fileobj,
            as_attachment=True,
            filename=f"export-{job.pk}.{job.format}.gz",
            content_type="application/gzip",
        )


# --- historical exports ----------------------------------------------------------------------


class HistoricalExportListView(APIView):
    @extend_schema(
        operation_id="projects_plugin_configs_historical_exports_list",
        parameters=[ListQuery],
        responses=HistoricalExportPage,
    )
    def get(self, request, project_id: int, config_id: int):
        config = _plugin_config(request, project_id, config_id)
        jobs = HistoricalExport.objects.filter(plugin_config=config).order_by("-created_at", "-id")[: _limit(request)]
        return Response({"results": HistoricalExportSerializer(jobs, many=True).data})

    @extend_schema(request=RangeSerializer, responses={201: HistoricalExportSerializer})
    def post(self, request, project_id: int, config_id: int):
        config = _plugin_config(request, project_id, config_id)
        serializer = RangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if "export_events" not in (config.plugin.capabilities or {}).get("methods", []):
            message = f"Plugin {config.plugin.name!r} has no export_events; pick a config whose plugin has."
            raise ValidationError({"plugin_config": message})
        if not config.enabled:
            raise ValidationError({"plugin_config": "This plugin config is disabled; enable it first."})
        job = control.start(
            HistoricalExport(
                project=config.project, plugin_config=config, requested_by=request.user, **serializer.validated_data
            )
        )
        return Response(HistoricalExportSerializer(job).data, status=status.HTTP_201_CREATED)


class HistoricalExportDetailView(APIView):
    @extend_schema(responses=HistoricalExportSerializer)
    def get(self, request, project_id: int, config_id: int, export_id: int):
        return Response(HistoricalExportSerializer(_historical_for(request, project_id, config_id, export_id)).data)


class HistoricalExportActionView(APIView):
    """POST .../pause/, .../resume/, .../cancel/."""

    action = ""

    @extend_schema(request=None, responses={200: HistoricalExportSerializer, 409: CONFLICT})
    def post(self, request, project_id: int, config_id: int, export_id: int):
        job = _historical_for(request, project_id, config_id, export_id)
        job = _apply(getattr(control, self.action), job)
        return Response(HistoricalExportSerializer(job).data)


def _plugin_config(request, project_id, config_id):
    project = project_for(request.user, project_id)
    try:
        return PluginConfig.objects.select_related("project", "plugin").get(pk=int(config_id), project=project)
    except (PluginConfig.DoesNotExist, ValueError, TypeError):
        raise Http404("No such plugin config.") from None
