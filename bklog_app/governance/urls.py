"""Governance API (docs/api.md#data-governance). Mounted at the root: every path starts with api/projects/<id>/."""

from django.urls import path

from bklog_app.governance import views

PROJECT = "api/projects/<int:project_id>"
PLAN = f"{PROJECT}/tracking_plan"

urlpatterns = [
    path(f"{PROJECT}/event_definitions/", views.EventDefinitionList.as_view(), name="event-definitions"),
    path(
        f"{PROJECT}/event_definitions/<int:definition_id>/",
        views.EventDefinitionDetail.as_view(),
        name="event-definition",
    ),
    path(f"{PROJECT}/property_definitions/", views.PropertyDefinitionList.as_view(), name="property-definitions"),
    path(f"{PLAN}/", views.TrackingPlanView.as_view(), name="tracking-plan"),
    path(f"{PLAN}/draft/", views.TrackingPlanDraft.as_view(), name="tracking-plan-draft"),
    path(f"{PLAN}/check/", views.TrackingPlanCheck.as_view(), name="tracking-plan-check"),
    path(f"{PLAN}/violations/", views.PlanViolationList.as_view(), name="tracking-plan-violations"),
]
