"""An organization always has an admin.

Only an admin can manage an organization's members and projects (rotate a capture token, change
a rate limit): an organization left without one is stuck until an operator repairs it in the
Django admin. So its first user becomes its admin (`manage.py create_api_key`, and whoever
creates it through POST /api/organizations/), and its last admin can be neither demoted nor
removed (the members API answers 409, `create_api_key --role member` refuses).

Role changes of one organization run one at a time, under a lock on the organization's row, so
two admins demoting each other at the same moment cannot both succeed. Call these inside a
transaction.
"""

from bklog_app.models import Membership, Organization


class LastAdminError(Exception):
    """The change would leave the organization without an admin."""

    def __init__(self, organization: Organization):
        super().__init__(
            f"This is the last admin of {organization.name}: an organization always has an admin. "
            "Make another member an admin first."
        )


def lock_roles(organization: Organization) -> None:
    """Hold the organization's row until the transaction ends (SQLite's writers queue anyway)."""
    Organization.objects.select_for_update().only("pk").get(pk=organization.pk)


def has_admin(organization: Organization) -> bool:
    return organization.memberships.filter(role=Membership.Role.ADMIN).exists()


def check_an_admin_remains(membership: Membership, new_role: str | None) -> None:
    """Raise LastAdminError if `membership` is the only admin left and would stop being one:
    given another role, or removed (new_role None). Reads the roles as stored, under lock_roles."""
    if new_role == Membership.Role.ADMIN:
        return
    admins = set(
        Membership.objects.filter(organization_id=membership.organization_id, role=Membership.Role.ADMIN).values_list(
            "pk", flat=True
        )
    )
    if admins == {membership.pk}:
        raise LastAdminError(membership.organization)
