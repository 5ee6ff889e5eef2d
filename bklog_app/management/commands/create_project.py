"""`manage.py create_project NAME --org ORG`: a project, and its organization if there is none
of that name yet.

An organization made here has no members. Its first user, given a key with `manage.py
create_api_key USER --org ORG`, becomes its admin (bklog_app/memberships.py).
"""

import json

from django.core.management.base import BaseCommand
from django.db import transaction

from bklog_app.models import Organization, Project


class Command(BaseCommand):
    help = "Create a project (and its organization if needed); print its id and capture token."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--org", default="Default", help="Organization name (created if missing).")
        parser.add_argument(
            "--get-or-create",
            action="store_true",
            help="Reuse the project of that name in the organization if it exists.",
        )
        parser.add_argument("--json", action="store_true", help='Print {"id": ..., "token": ...}.')

    @transaction.atomic
    def handle(self, *args, **options):
        organization, created = Organization.objects.get_or_create(name=options["org"])
        project = None
        if options["get_or_create"]:
            project = Project.objects.filter(organization=organization, name=options["name"]).order_by("id").first()
        if project is None:
            project = Project.objects.create(organization=organization, name=options["name"])
        if options["json"]:
            self.stdout.write(json.dumps({"id": project.id, "token": project.api_token}))
        else:
            self.stdout.write(
                f"Project {project.name} (id {project.id}) in {organization.name}; token: {project.api_token}"
            )
            if created:
                self.stdout.write(
                    f"Organization {organization.name} is new and has no members: its first user becomes its "
                    f"admin (manage.py create_api_key USERNAME --org {organization.name!r})."
                )
