"""Data governance (docs/governance.md): what each project sends, and the plan it should follow.

Definitions are written by ingestion only (pipeline/governance/definitions.py); people add a
description, tags and `verified`. A project has at most one tracking plan; `version` grows with
every change, so that workers compile a plan's schemas once per version. Violations are counts
per (event, rule) with a few samples, written by ingestion (pipeline/governance/violations.py).
"""

from django.db import models
from django.utils import timezone

from bklog_app.models import Project


class PropertyType(models.TextChoices):
    STRING = "String"
    NUMERIC = "Numeric"
    BOOLEAN = "Boolean"
    DATETIME = "DateTime"
    OBJECT = "Object"
    ARRAY = "Array"


class EventDefinition(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="event_definitions")
    name = models.CharField(max_length=400)
    created_at = models.DateTimeField(default=timezone.now, help_text="When ingestion first saw the event.")
    last_seen_at = models.DateTimeField(default=timezone.now)
    description = models.TextField(blank=True, default="")
    tags = models.JSONField(default=list, blank=True)
    verified = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="unique_event_definition")]

    def __str__(self) -> str:
        return self.name


class PropertyDefinition(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="property_definitions")
    name = models.CharField(max_length=400)
    property_type = models.CharField(
        max_length=16, choices=PropertyType.choices, help_text="Inferred from the first value seen."
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    description = models.TextField(blank=True, default="")
    tags = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="unique_property_definition")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_numerical(self) -> bool:
        return self.property_type == PropertyType.NUMERIC


class EventProperty(models.Model):
    """A property key seen on an event name: what `?event_names=` filters by."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="event_properties")
    event = models.CharField(max_length=400)
    property = models.CharField(max_length=400)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "event", "property"], name="unique_event_property")]
        verbose_name_plural = "event properties"

    def __str__(self) -> str:
        return f"{self.event}.{self.property}"


class TrackingPlan(models.Model):
    class Mode(models.TextChoices):
        OFF = "off"
        OBSERVE = "observe"
        ENFORCE = "enforce"

    class OnUnknownProperty(models.TextChoices):
        ALLOW = "allow"
        STRIP = "strip"

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="tracking_plan")
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.OFF)
    allow_unplanned_events = models.BooleanField(default=True)
    on_unknown_property = models.CharField(
        max_length=8,
        choices=OnUnknownProperty.choices,
        default=OnUnknownProperty.ALLOW,
        help_text="strip: under enforce, properties a planned event's schema does not list are dropped.",
    )
    events = models.JSONField(
        default=dict,
        blank=True,
        help_text='Per event name, a JSON Schema of its properties: {"signed_up": {"schema": {...}}}',
    )
    version = models.PositiveIntegerField(default=1, help_text="Incremented by every change.")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"tracking plan of {self.project}"


class PlanViolation(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="plan_violations")
    event = models.CharField(max_length=400)
    rule = models.CharField(
        max_length=400, help_text="The schema keyword's path, or unplanned_event / unknown_property."
    )
    count = models.PositiveBigIntegerField(default=0)
    samples = models.JSONField(default=list, blank=True, help_text="The first few violations: uuid, mode, message.")
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "event", "rule"], name="unique_plan_violation")]

    def __str__(self) -> str:
        return f"{self.event}: {self.rule}"
