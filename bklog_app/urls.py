from django.contrib import admin
from django.urls import include, path, re_path

from bklog_app import health, metrics_view
from bklog_app.capture.capture_v1 import capture_v1
from bklog_app.capture.paths import CAPTURE_ENDPOINTS, CAPTURE_V1_ENDPOINT, SEGMENT_ENDPOINTS
from bklog_app.capture.segment import segment
from bklog_app.capture.views import capture
from bklog_app.sdk import views as sdk
from bklog_app.sdk.definitions import LocalEvaluation

urlpatterns = [
    re_path(rf"^{CAPTURE_ENDPOINTS}/?$", capture, name="capture"),
    re_path(r"^array/(?P<token>[^/]+)/config(?P<script>\.js)?$", sdk.config, name="sdk_config"),
    re_path(r"^(?P<endpoint>flags|decide)/?$", sdk.flags, name="sdk_flags"),
    path("flags/definitions", LocalEvaluation.as_view(), name="sdk_flag_definitions"),
    path("api/feature_flag/local_evaluation/", LocalEvaluation.as_view(), name="sdk_local_evaluation"),
    path("_health", health.liveness, name="liveness"),
    path("health", health.health, name="health"),
    path("health/ready", health.readiness, name="readiness"),
    path("metrics", metrics_view.metrics, name="metrics"),
    re_path(rf"^{SEGMENT_ENDPOINTS}/?$", segment, name="segment"),
    re_path(rf"^{CAPTURE_V1_ENDPOINT}/?$", capture_v1, name="capture_v1"),
    path("", include("bklog_app.api.urls")),
    path("api/projects/<int:project_id>/persons/", include("bklog_app.persons.urls")),
    path("", include("bklog_app.plugins.urls")),
    path("", include("bklog_app.exports.urls")),
    path("", include("bklog_app.privacy.urls")),
    path("", include("bklog_app.governance.urls")),
    path("admin/", admin.site.urls),
]

handler400 = "bklog_app.api.errors.bad_request"
handler403 = "bklog_app.api.errors.permission_denied"
handler404 = "bklog_app.api.errors.not_found"
handler500 = "bklog_app.api.errors.server_error"
