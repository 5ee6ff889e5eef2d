from django.contrib import admin
from django.urls import path, re_path

from bklog_app import health
from bklog_app.api.events import EventListView
from bklog_app.capture.views import capture

CAPTURE_ENDPOINTS = r"(?P<endpoint>e|capture|track|batch|engage|i/v0/e)"

urlpatterns = [
    re_path(rf"^{CAPTURE_ENDPOINTS}/?$", capture, name="capture"),
    path("_health", health.liveness, name="liveness"),
    path("health", health.health, name="health"),
    path("health/ready", health.readiness, name="readiness"),
    path("api/projects/<int:project_id>/events/", EventListView.as_view(), name="project-events"),
    path("admin/", admin.site.urls),
]
