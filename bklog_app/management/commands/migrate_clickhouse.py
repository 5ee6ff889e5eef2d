from django.core.management.base import BaseCommand

from pipeline.storage.migrate import migrate


class Command(BaseCommand):
    help = "Create the ClickHouse database and apply the schema migrations not yet applied."

    def handle(self, *args, **options):
        applied = migrate(report=lambda line: self.stdout.write(line))
        self.stdout.write(self.style.SUCCESS(f"ClickHouse schema up to date ({len(applied)} applied)."))
