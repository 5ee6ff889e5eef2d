"""Deletion requests and suppressions (docs/privacy.md).

A `DeletionRequest` is the audit record of one deletion of stored events: who asked, when, what
(a person's ids, or a filter), and how far its ClickHouse mutation has got. A person's rows in
the database go at once, when the request is made; its events go on a worker
(pipeline/privacy/deletion.py). A `Suppression` keeps a distinct id's later events out: ingestion
drops them before the plugin chain and counts them here.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from bklog_app.models import Project


class DeletionStatus(models.TextChoices):
    COUNTING = "counting"  # the worker counts the rows the request matches
    COUNTED = "counted"  # a dry run: counted, waiting for a confirm
    QUEUED = "queued"  # to be deleted by the next mutation of its project
    RUNNING = "running"  # its mutation is under way
    SUCCEEDED = "succeeded"
    FAILED = "failed"


UNFINISHED = (DeletionStatus.COUNTING, DeletionStatus.QUEUED, DeletionStatus.RUNNING)


class DeletionRequest(models.Model):
    class Kind(models.TextChoices):
        PERSON = "person"
        FILTER = "filter"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(max_length=8, choices=Kind.choices)
    filter = models.JSONField(
        default=dict,
        help_text="person: person_uuid, distinct_ids, person_ids (the person's and those merged into it); "
        "filter: event, distinct_id, after, before (ISO 8601).",
    )
    dry_run = models.BooleanField(default=False, help_text="Wait for a confirm after counting.")
    suppress = models.BooleanField(default=False, help_text="The person's distinct ids were suppressed.")
    status = models.CharField(max_length=10, choices=DeletionStatus.choices, default=DeletionStatus.COUNTING)
    dry_run_count = models.BigIntegerField(null=True, blank=True, help_text="Rows matched when counted.")
    rows_affected = models.BigIntegerField(null=True, blank=True, help_text="Rows matched when the mutation began.")
    progress = models.PositiveSmallIntegerField(default=0, help_text="0-100, from the mutation's parts to do.")
    mutation_marker = models.CharField(max_length=64, blank=True, default="", help_text="Finds its mutation.")
    parts_total = models.IntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "status"], name="deletion_project_status")]

    def __str__(self) -> str:
        return f"deletion {self.pk} ({self.kind}, {self.status})"


class Suppression(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    distinct_id = models.CharField(max_length=400)
    reason = models.CharField(max_length=200, blank=True, default="")
    deletion_request = models.ForeignKey(
        DeletionRequest, null=True, blank=True, on_delete=models.SET_NULL, related_name="suppressions"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    events_dropped = models.BigIntegerField(default=0, help_text="Events of this id dropped at ingestion.")
    last_dropped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "distinct_id"],
                condition=Q(lifted_at__isnull=True),
                name="one_active_suppression_per_distinct_id",
            )
        ]

    def __str__(self) -> str:
        return f"{self.distinct_id} (project {self.project_id})"
