"""Organization roles: members read and use; admins change the organization and its projects."""

from rest_framework.exceptions import PermissionDenied

from bklog_app.models import Membership, Organization


def role_in(user, organization: Organization) -> str | None:
    return Membership.objects.filter(user=user, organization=organization).values_list("role", flat=True).first()


def require_admin(user, organization: Organization) -> None:
    if role_in(user, organization) != Membership.Role.ADMIN:
        raise PermissionDenied("Only an admin of this organization can do this. Ask one of its admins.")
