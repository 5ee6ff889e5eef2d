import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from bklog_app.models import Membership, Organization, PersonalAPIKey


class Command(BaseCommand):
    help = "Create a personal API key for a user (created if missing) in an organization."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--org", default="Default", help="Organization name (created if missing).")
        parser.add_argument("--staff", action="store_true", help="Make the user staff.")
        parser.add_argument("--json", action="store_true", help='Print {"key": ...}.')

    @transaction.atomic
    def handle(self, *args, **options):
        user, _ = get_user_model().objects.get_or_create(username=options["username"])
        if options["staff"] and not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        organization, created = Organization.objects.get_or_create(name=options["org"])
        role = Membership.Role.ADMIN if created else Membership.Role.MEMBER
        Membership.objects.get_or_create(organization=organization, user=user, defaults={"role": role})
        _, key = PersonalAPIKey.issue(user, label="cli")
        if options["json"]:
            self.stdout.write(json.dumps({"key": key}))
        else:
            self.stdout.write(f"API key for {user.username} in {organization.name} (shown once): {key}")
