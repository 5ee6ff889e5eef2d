"""`manage.py copy_events_to_cluster --source HOST:PORT`: a one-server deployment's events into the
cluster (pipeline/storage/copy_to_cluster.py; docs/operations.md#growing-from-one-node-to-the-cluster)."""

from django.core.management.base import BaseCommand, CommandError

from pipeline.storage.copy_to_cluster import CopyRefused, copy_events_to_cluster


class Command(BaseCommand):
    help = (
        "Copy the events of a single ClickHouse server into the cluster (CLICKHOUSE_CLUSTER), a month at a "
        "time, inside ClickHouse; safe to run again: months already copied are skipped, partial ones redone."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--source", required=True, help="HOST:PORT (native protocol) of the old server, as the cluster reaches it."
        )
        parser.add_argument("--source-database", default="bklog", help="Its bklog database (default bklog).")
        parser.add_argument("--dry-run", action="store_true", help="Say what each month needs; change nothing.")

    def handle(self, *args, **options):
        try:
            results = copy_events_to_cluster(
                options["source"],
                options["source_database"],
                dry_run=options["dry_run"],
                report=lambda line: self.stdout.write(line),
            )
        except CopyRefused as exc:
            raise CommandError(str(exc)) from exc
        copied = sum(result.copied_rows for result in results)
        seconds = sum(result.seconds for result in results)
        done = "Dry run over" if options["dry_run"] else f"Copied {copied:,} events in {seconds:.1f} s"
        skipped = sum(result.decision == "skip" for result in results)
        self.stdout.write(self.style.SUCCESS(f"{done}; {skipped} of {len(results)} month(s) were already copied."))
