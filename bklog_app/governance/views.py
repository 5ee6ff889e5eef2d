"""Definitions, the tracking plan, its violations, and checking an event: docs/api.md#data-governance.

Members of the project's organization read everything and describe definitions; changing the
plan, which decides what ingestion stores, is for the organization's admins.
"""

from django.db import transaction
from django.db.models import F
from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from bklog_app.api.pagination import Pagination
from bklog_app.api.permissions import require_admin
from bklog_app.api.scoping import project_for
from bklog_app.governance.models import EventDefinition, TrackingPlan
from bklog_app.governance.serializers import (
    CheckRequest,
    CheckResult,
    DefinitionQuery,
    EventDefinitionSerializer,
    PlanViolationSerializer,
    PropertyDefinitionQuery,
    PropertyDefinitionSerializer,
    TrackingPlanSerializer,
)
from pipeline.governance.definitions import volumes
from pipeline.governance.drafts import draft_plan
from pipeline.governance.plans import check_event, compile_plan

PLAN_FIELDS = ("mode", "allow_unplanned_events", "on_unknown_property", "events")
NO_PLAN = {
    "mode": "off",
    "allow_unplanned_events": True,
    "on_unknown_property": "allow",
    "events": {},
    "version": 0,
    "updated_at": None,
}


class _ProjectScoped:
    def project(self):
        return project_for(self.request.user, self.kwargs["project_id"])

    def query(self, serializer_class) -> dict:
        query = serializer_class(data=self.request.query_params)
        if not query.is_valid():
            raise ValidationError(query.errors)
        return query.validated_data


class _WithVolumes:
    """Serializes definitions with their 30-day volumes, read once for the page or the one."""

    def get_serializer(self, *args, **kwargs):
        if args and args[0] is not None:
            names = [item.name for item in args[0]] if isinstance(args[0], list) else [args[0].name]
            kwargs["context"] = {
                **self.get_serializer_context(),
                "volumes": volumes(int(self.kwargs["project_id"]), names),
            }
        return super().get_serializer(*args, **kwargs)


class EventDefinitionList(_WithVolumes, _ProjectScoped, generics.ListAPIView):
    """Event names seen by ingestion, most recently seen first; `?search=` filters by name."""

    serializer_class = EventDefinitionSerializer
    pagination_class = Pagination

    @extend_schema(parameters=[DefinitionQuery])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        definitions = self.project().event_definitions.order_by("-last_seen_at", "name")
        search = self.query(DefinitionQuery).get("search")
        return definitions.filter(name__icontains=search) if search else definitions


class EventDefinitionDetail(_WithVolumes, _ProjectScoped, generics.RetrieveUpdateAPIView):
    """PATCH `description`, `tags`, `verified`; the rest is ingestion's."""

    serializer_class = EventDefinitionSerializer
    http_method_names = ["get", "patch", "head", "options"]

    def get_object(self) -> EventDefinition:
        try:
            return self.project().event_definitions.get(pk=self.kwargs["definition_id"])
        except EventDefinition.DoesNotExist:
            raise NotFound("No such event definition in this project.") from None


class PropertyDefinitionList(_ProjectScoped, generics.ListAPIView):
    """Property keys seen by ingestion with their inferred types; `?search=`, and `?event_names=`
    (a JSON list) for the properties seen on any of those events."""

    serializer_class = PropertyDefinitionSerializer
    pagination_class = Pagination

    @extend_schema(parameters=[PropertyDefinitionQuery])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        project = self.project()
        query = self.query(PropertyDefinitionQuery)
        definitions = project.property_definitions.order_by("name")
        if query.get("search"):
            definitions = definitions.filter(name__icontains=query["search"])
        if query.get("event_names") is not None:
            seen = project.event_properties.filter(event__in=query["event_names"]).values("property")
            definitions = definitions.filter(name__in=seen)
        return definitions


class TrackingPlanView(_ProjectScoped, APIView):
    """GET exports the project's plan as JSON; PUT imports one (the whole plan, GET's body as it is)."""

    serializer_class = TrackingPlanSerializer

    @extend_schema(responses=TrackingPlanSerializer)
    def get(self, request, project_id: int):
        plan = TrackingPlan.objects.filter(project=self.project()).first()
        return Response(TrackingPlanSerializer(plan).data if plan else NO_PLAN)

    @extend_schema(request=TrackingPlanSerializer, responses=TrackingPlanSerializer)
    def put(self, request, project_id: int):
        project = self.project()
        require_admin(request.user, project.organization)
        body = TrackingPlanSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = {field: body.validated_data[field] for field in PLAN_FIELDS}
        with transaction.atomic():
            plan, created = TrackingPlan.objects.select_for_update().get_or_create(project=project, defaults=values)
            if not created:
                for field, value in values.items():
                    setattr(plan, field, value)
                plan.version = F("version") + 1
                plan.save()
                plan.refresh_from_db()
        return Response(TrackingPlanSerializer(plan).data)


class TrackingPlanDraft(_ProjectScoped, APIView):
    """A plan drafted from the definitions (not saved): review it, then PUT it."""

    @extend_schema(responses=TrackingPlanSerializer, operation_id="projects_tracking_plan_draft")
    def get(self, request, project_id: int):
        return Response({**draft_plan(self.project().id), "version": 0, "updated_at": None})


class TrackingPlanCheck(_ProjectScoped, APIView):
    """POST {"event", "properties"[, "plan"]}: what ingestion would do with this event, and why.
    Nothing is stored or counted."""

    @extend_schema(request=CheckRequest, responses=CheckResult, operation_id="projects_tracking_plan_check")
    def post(self, request, project_id: int):
        project = self.project()
        body = CheckRequest(data=request.data)
        body.is_valid(raise_exception=True)
        plan = body.validated_data.get("plan")
        if plan is None:
            saved = TrackingPlan.objects.filter(project=project).values(*PLAN_FIELDS).first()
            plan = saved or NO_PLAN
        result = check_event(compile_plan(plan), body.validated_data["event"], body.validated_data["properties"])
        return Response(result)


class PlanViolationList(_ProjectScoped, generics.ListAPIView):
    """Violations of the plan per (event, rule), most frequent first; `?event=` filters."""

    serializer_class = PlanViolationSerializer
    pagination_class = Pagination

    def get_queryset(self):
        violations = self.project().plan_violations.order_by("-count", "event", "rule")
        event = self.request.query_params.get("event")
        return violations.filter(event=event) if event else violations
