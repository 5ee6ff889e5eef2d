from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from bklog_app.api import deadletters, keys, organizations, projects
from bklog_app.api.events import EventListView

P = "api/projects/<int:project_id>/"

urlpatterns = [
    # The schema and its browsable UI are public: they describe the API, they hold no data.
    path("api/schema/", SpectacularAPIView.as_view(permission_classes=[AllowAny]), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema", permission_classes=[AllowAny]), name="docs"),
    path("api/organizations/", organizations.OrganizationList.as_view(), name="organizations"),
    path("api/organizations/<int:pk>/", organizations.OrganizationDetail.as_view(), name="organization"),
    path("api/organizations/<int:organization_id>/members/", organizations.MemberList.as_view(), name="members"),
    path(
        "api/organizations/<int:organization_id>/members/<int:pk>/",
        organizations.MemberDetail.as_view(),
        name="member",
    ),
    path("api/keys/", keys.APIKeyList.as_view(), name="api-keys"),
    path("api/keys/<int:pk>/", keys.APIKeyDetail.as_view(), name="api-key"),
    path("api/projects/", projects.ProjectList.as_view(), name="projects"),
    path(P, projects.ProjectDetail.as_view(), name="project"),
    path(P + "rotate_token/", projects.RotateToken.as_view(), name="project-rotate-token"),
    path(P + "events/", EventListView.as_view(), name="project-events"),
    path(P + "dead_letters/", deadletters.DeadLetterList.as_view(), name="dead-letters"),
    path(P + "dead_letters/replay/", deadletters.DeadLetterReplayMany.as_view(), name="dead-letters-replay"),
    path(P + "dead_letters/<int:letter_id>/", deadletters.DeadLetterDetail.as_view(), name="dead-letter"),
    path(
        P + "dead_letters/<int:letter_id>/replay/",
        deadletters.DeadLetterReplayOne.as_view(),
        name="dead-letter-replay",
    ),
    path(P + "ingestion_warnings/", deadletters.IngestionWarningList.as_view(), name="ingestion-warnings"),
]
