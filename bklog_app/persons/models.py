"""A person is who did an event; its distinct ids are the names SDKs know it by (docs/contracts.md#persons).

Ingestion (pipeline/persons/) is the only writer apart from the API's delete. `version` counts
committed changes to a person (properties, flags, distinct ids added or merged in): workers use
it to validate their distinct_id cache and to detect a concurrent change before they write.
A distinct id only ever leaves a person when that person is deleted (merged away or deleted
through the API), which is what makes "same uuid, same version" mean "same distinct ids".
"""

import uuid

from django.db import models
from django.utils import timezone

from bklog_app.models import Project


class Person(models.Model):
    uuid = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: person_project_created starts with the project (the cascade from a
    # deleted project, the persons list), and every index is written for each new person. No
    # foreign key constraint either: the database checks the project once per statement instead
    # of once per row (migration 0003_project_checked_per_statement).
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="persons", db_index=False, db_constraint=False
    )
    properties = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, help_text="Timestamp of the person's first event.")
    is_identified = models.BooleanField(default=False)
    version = models.PositiveBigIntegerField(default=0, help_text="Incremented by every committed change.")

    class Meta:
        indexes = [models.Index(fields=["project", "-created_at", "-uuid"], name="person_project_created")]

    def __str__(self) -> str:
        return str(self.uuid)


class PersonDistinctId(models.Model):
    # No index of its own: unique_distinct_id_per_project starts with the project. Checked as
    # Person.project is.
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="person_distinct_ids", db_index=False, db_constraint=False
    )
    distinct_id = models.CharField(max_length=400)
    # No foreign key constraint: the database checks the person once per statement, and does not
    # lock the persons the same transaction created (migration 0004_person_checked_per_statement).
    person = models.ForeignKey(Person, on_delete=models.CASCADE, related_name="distinct_ids", db_constraint=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "distinct_id"], name="unique_distinct_id_per_project")
        ]
        verbose_name = "person distinct id"

    def __str__(self) -> str:
        return self.distinct_id


class PersonOverride(models.Model):
    """Events keep the person they were stored with; this maps a merged-away person to the
    person it now is, so that reads show one person for all of a merged person's events.

    Chains are kept flat: when the survivor is itself merged away later, existing rows are
    repointed, so one lookup always gives the current person.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="person_overrides")
    old_person_uuid = models.UUIDField()
    override_person_uuid = models.UUIDField(db_index=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "old_person_uuid"], name="unique_person_override_per_project")
        ]

    def __str__(self) -> str:
        return f"{self.old_person_uuid} -> {self.override_person_uuid}"
