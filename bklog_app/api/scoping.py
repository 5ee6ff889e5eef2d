"""Every API resource is scoped to the caller's organizations; anything else is a 404."""

from django.http import Http404

from bklog_app.models import Project


def projects_for(user):
    return Project.objects.filter(organization__memberships__user=user)


def project_for(user, project_id) -> Project:
    """The caller's project with this id, or 404 (never 403: other ids must not be probed)."""
    try:
        return projects_for(user).select_related("organization").get(pk=int(project_id))
    except (Project.DoesNotExist, ValueError, TypeError):
        raise Http404("No such project.") from None
