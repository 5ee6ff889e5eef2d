"""`manage.py create_api_key USER --org ORG [--role admin|member]`: a personal API key for a user
(created if missing) in an organization (created if missing).

The role defaults so that the organization has an admin (bklog_app/memberships.py): a user who
joins an organization with no admin becomes its admin, as does a member of one that has lost
its admin; otherwise a new user joins as a member and an existing member keeps their role.
"""

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from bklog_app.memberships import LastAdminError, check_an_admin_remains, has_admin, lock_roles
from bklog_app.models import Membership, Organization, PersonalAPIKey


class Command(BaseCommand):
    help = "Create a personal API key for a user (created if missing) in an organization."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--org", default="Default", help="Organization name (created if missing).")
        parser.add_argument(
            "--role",
            choices=Membership.Role.values,
            help="The user's role in the organization. Default: admin if it has no admin yet, "
            "else member for a new member (an existing member keeps their role).",
        )
        parser.add_argument("--staff", action="store_true", help="Make the user staff.")
        parser.add_argument("--json", action="store_true", help='Print {"key": ..., "role": ...}.')

    @transaction.atomic
    def handle(self, *args, **options):
        user, _ = get_user_model().objects.get_or_create(username=options["username"])
        if options["staff"] and not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        organization, _ = Organization.objects.get_or_create(name=options["org"])
        membership = join(organization, user, options["role"])
        _, key = PersonalAPIKey.issue(user, label="cli")
        if options["json"]:
            self.stdout.write(json.dumps({"key": key, "role": membership.role}))
        else:
            self.stdout.write(
                f"API key for {user.username}, {membership.role} of {organization.name} (shown once): {key}"
            )


def join(organization: Organization, user, role: str | None) -> Membership:
    """The user's membership with `role`, or the default role; never leaves the organization
    without an admin."""
    lock_roles(organization)
    membership = Membership.objects.filter(organization=organization, user=user).first()
    if role is None:
        keep = membership.role if membership is not None else Membership.Role.MEMBER
        role = keep if has_admin(organization) else Membership.Role.ADMIN
    if membership is None:
        return Membership.objects.create(organization=organization, user=user, role=role)
    if membership.role != role:
        try:
            check_an_admin_remains(membership, role)
        except LastAdminError as error:
            raise CommandError(str(error)) from error
        membership.role = role
        membership.save(update_fields=["role"])
    return membership
