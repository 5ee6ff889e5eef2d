"""Mounted at /api/projects/<int:project_id>/persons/."""

from django.urls import path

from bklog_app.persons.api import PersonDetailView, PersonListView

urlpatterns = [
    path("", PersonListView.as_view(), name="project-persons"),
    path("<str:person_id>/", PersonDetailView.as_view(), name="project-person"),
]
