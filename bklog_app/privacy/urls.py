"""Privacy API (docs/privacy.md). Mounted at the root: every path starts with api/projects/<id>/."""

from django.urls import path

from bklog_app.privacy import views

PROJECT = "api/projects/<int:project_id>"

urlpatterns = [
    path(f"{PROJECT}/deletions/", views.DeletionListView.as_view(), name="deletions"),
    path(f"{PROJECT}/deletions/<int:deletion_id>/", views.DeletionDetailView.as_view(), name="deletion"),
    path(
        f"{PROJECT}/deletions/<int:deletion_id>/confirm/",
        views.DeletionConfirmView.as_view(),
        name="deletion-confirm",
    ),
    path(f"{PROJECT}/suppressions/", views.SuppressionListView.as_view(), name="suppressions"),
    path(
        f"{PROJECT}/suppressions/<int:suppression_id>/lift/",
        views.SuppressionLiftView.as_view(),
        name="suppression-lift",
    ),
]
