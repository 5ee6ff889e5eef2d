"""/api/plugins/ and /api/projects/<id>/plugin_configs/: thin views over the serializers and the
plugin runtime. Every change reloads the workers (bklog_app.plugins.signals). A test run runs on a
worker, never here (pipeline/plugins/testrun.py says why)."""

from django.db.models import Q
from django.http import Http404
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from bklog_app.api.scoping import project_for
from bklog_app.plugins.models import Plugin, PluginConfig, PluginLogEntry
from bklog_app.plugins.serializers import (
    STAFF_ONLY,
    PluginConfigSerializer,
    PluginLogEntrySerializer,
    PluginSerializer,
    TestRunSerializer,
)
from pipeline.ingestion.timestamps import parse_iso
from pipeline.plugins.loader import (
    PluginLoadError,
    builtin_folder,
    builtin_names,
    code_for,
    code_from_folder,
    inspect_code,
)
from pipeline.plugins.tasks import test_run_on_a_worker
from pipeline.plugins.testrun import NoWorkerAnswered, RedisUnavailable

MAX_LOG_LIMIT = 1000


def plugins_for(user):
    """Plugins of the caller's organizations, and plugins of no organization."""
    return Plugin.objects.filter(Q(organization__isnull=True) | Q(organization__memberships__user=user)).distinct()


def plugin_for(user, plugin_id) -> Plugin:
    try:
        return plugins_for(user).get(pk=int(plugin_id))
    except (Plugin.DoesNotExist, ValueError, TypeError):
        raise Http404("No such plugin.") from None


class PluginListView(APIView):
    def get(self, request):
        plugins = plugins_for(request.user).order_by("id")
        return Response({"results": PluginSerializer(plugins, many=True).data})

    def post(self, request):
        serializer = PluginSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        plugin = serializer.save()
        return Response(PluginSerializer(plugin).data, status=status.HTTP_201_CREATED)


class BuiltinListView(APIView):
    def get(self, request):
        results = []
        for name in builtin_names():
            code = code_from_folder("builtin", builtin_folder(name))
            try:
                capabilities = inspect_code(code)
            except PluginLoadError as exc:  # a broken built-in is a bug; show it rather than hide it
                capabilities = {"error": str(exc)}
            results.append(
                {
                    "name": name,
                    "title": code.manifest["name"],
                    "description": code.manifest.get("description", ""),
                    "config_schema": code.manifest.get("config", []),
                    "capabilities": capabilities,
                }
            )
        return Response({"results": results})


class PluginDetailView(APIView):
    def get(self, request, plugin_id: int):
        return Response(PluginSerializer(plugin_for(request.user, plugin_id)).data)

    def patch(self, request, plugin_id: int):
        plugin = plugin_for(request.user, plugin_id)
        serializer = PluginSerializer(plugin, data=request.data, partial=True, context={"request": request})
        serializer.is_valid(raise_exception=True)
        return Response(PluginSerializer(serializer.save()).data)

    def delete(self, request, plugin_id: int):
        plugin = plugin_for(request.user, plugin_id)
        if plugin.source_type == Plugin.SourceType.SOURCE and not request.user.is_staff:
            raise PermissionDenied(STAFF_ONLY, code="permission_denied")
        plugin.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class PluginSourceView(APIView):
    """GET the files of a source plugin; PATCH {file name: contents or null} (staff only)."""

    def get(self, request, plugin_id: int):
        plugin = plugin_for(request.user, plugin_id)
        return Response({f.filename: f.source for f in plugin.source_files.order_by("filename")})

    def patch(self, request, plugin_id: int):
        plugin = plugin_for(request.user, plugin_id)
        if plugin.source_type != Plugin.SourceType.SOURCE:
            raise ValidationError({"source": "Only source plugins have editable files."})
        serializer = PluginSerializer(plugin, data={"source": request.data}, partial=True, context={"request": request})
        serializer.is_valid(raise_exception=True)
        plugin = serializer.save()
        return Response({f.filename: f.source for f in plugin.source_files.order_by("filename")})


class PluginReloadView(APIView):
    """POST: read the plugin's files again (a local plugin's changed on disk) and reload workers."""

    def post(self, request, plugin_id: int):
        plugin = plugin_for(request.user, plugin_id)
        try:
            code = code_for(plugin)
            plugin.capabilities = inspect_code(code)
        except PluginLoadError as exc:
            field = {"builtin": "builtin", "local": "path"}.get(plugin.source_type, "source")
            raise ValidationError({field: str(exc)}) from None
        plugin.plugin_json = code.manifest
        plugin.save()
        return Response(PluginSerializer(plugin).data)


def _config_for(request, project_id, config_id) -> PluginConfig:
    project = project_for(request.user, project_id)
    try:
        return PluginConfig.objects.select_related("plugin").get(pk=int(config_id), project=project)
    except (PluginConfig.DoesNotExist, ValueError, TypeError):
        raise Http404("No such plugin config.") from None


class PluginConfigListView(APIView):
    def get(self, request, project_id: int):
        project = project_for(request.user, project_id)
        configs = PluginConfig.objects.filter(project=project).select_related("plugin").order_by("order", "id")
        return Response({"results": PluginConfigSerializer(configs, many=True).data})

    def post(self, request, project_id: int):
        project = project_for(request.user, project_id)
        serializer = PluginConfigSerializer(
            data=request.data, plugins=plugins_for(request.user), context={"request": request, "project": project}
        )
        serializer.is_valid(raise_exception=True)
        config = serializer.save()
        return Response(PluginConfigSerializer(config).data, status=status.HTTP_201_CREATED)


class PluginConfigDetailView(APIView):
    def get(self, request, project_id: int, config_id: int):
        return Response(PluginConfigSerializer(_config_for(request, project_id, config_id)).data)

    def patch(self, request, project_id: int, config_id: int):
        config = _config_for(request, project_id, config_id)
        serializer = PluginConfigSerializer(
            config,
            data=request.data,
            partial=True,
            plugins=Plugin.objects.filter(pk=config.plugin_id),
            context={"request": request, "project": config.project},
        )
        serializer.is_valid(raise_exception=True)
        return Response(PluginConfigSerializer(serializer.save()).data)

    def delete(self, request, project_id: int, config_id: int):
        _config_for(request, project_id, config_id).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class LogQuery(serializers.Serializer):
    type = serializers.ChoiceField(choices=PluginLogEntry.Type.choices, required=False)
    source = serializers.ChoiceField(choices=PluginLogEntry.Source.choices, required=False)
    search = serializers.CharField(required=False)
    before = serializers.CharField(required=False, help_text="ISO 8601: entries older than this.")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=MAX_LOG_LIMIT, default=100)

    def validate_before(self, value):
        parsed = parse_iso(value)
        if parsed is None:
            raise serializers.ValidationError("'before' must be an ISO 8601 time, such as 2024-01-31T12:00:00Z.")
        return parsed


class PluginLogListView(APIView):
    def get(self, request, project_id: int, config_id: int):
        config = _config_for(request, project_id, config_id)
        query = LogQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        entries = PluginLogEntry.objects.filter(plugin_config=config)
        if params.get("type"):
            entries = entries.filter(type=params["type"])
        if params.get("source"):
            entries = entries.filter(source=params["source"])
        if params.get("search"):
            entries = entries.filter(message__icontains=params["search"])
        if params.get("before"):
            entries = entries.filter(timestamp__lt=params["before"])
        entries = entries.order_by("-timestamp", "-id")[: params["limit"]]
        return Response({"results": PluginLogEntrySerializer(entries, many=True).data})


class PluginTestRunView(APIView):
    def post(self, request, project_id: int, config_id: int):
        config = _config_for(request, project_id, config_id)
        body = TestRunSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            return Response(test_run_on_a_worker(config, body.validated_data["event"]))
        except NoWorkerAnswered as exc:
            raise NoWorker(str(exc)) from None
        except RedisUnavailable as exc:
            raise Unavailable(str(exc)) from None


class NoWorker(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "no_worker"


class Unavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "server_error"
