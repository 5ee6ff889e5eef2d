"""Core models: who owns what (organizations, members, projects, API keys) and what ingestion
could not store (warnings, dead letters). Plugins, persons and exports have apps of their own."""

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone


def generate_capture_token() -> str:
    return "phc_" + secrets.token_urlsafe(32)


class Organization(models.Model):
    name = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="organizations")

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        ADMIN = "admin"
        MEMBER = "member"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    joined_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "user"], name="unique_membership")]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"


class Project(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField(max_length=200)
    api_token = models.CharField(max_length=64, unique=True, default=generate_capture_token)
    anonymize_ips = models.BooleanField(default=False)
    rate_limit_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Events accepted per minute by capture; empty for no limit."
    )
    # What browser SDKs capture, in PostHog's names. The remote config (GET /array/<token>/config
    # and the config fields of /flags and /decide: bklog_app/sdk/remote_config.py) carries them
    # all but the page view pair. posthog-js takes capture_pageview and capture_pageleave only
    # from its init options, and person_profiles too (only older versions read the config's
    # defaultIdentifiedOnly): the project API shows those three as `posthog_js_options`.
    autocapture_opt_out = models.BooleanField(
        default=False, help_text="Turn off posthog-js's autocapture of clicks, changes and submits."
    )
    capture_pageview = models.BooleanField(
        default=True, help_text="Browser SDKs send $pageview (posthog-js init option capture_pageview)."
    )
    capture_pageleave = models.BooleanField(
        default=True, help_text="Browser SDKs send $pageleave (posthog-js init option capture_pageleave)."
    )
    default_identified_only = models.BooleanField(
        default=True,
        help_text="Person profiles only for identified users (posthog-js person_profiles: identified_only); "
        "off: for every visitor (always).",
    )
    capture_performance_opt_in = models.BooleanField(
        default=False, help_text="posthog-js records network timing of the page's requests."
    )
    autocapture_web_vitals_opt_in = models.BooleanField(
        default=False, help_text="posthog-js sends $web_vitals events (LCP, CLS, FCP, INP)."
    )
    autocapture_exceptions_opt_in = models.BooleanField(
        default=False, help_text="posthog-js sends uncaught errors as $exception events."
    )
    heatmaps_opt_in = models.BooleanField(default=False, help_text="posthog-js sends $$heatmap events.")
    capture_dead_clicks = models.BooleanField(
        default=False, help_text="posthog-js sends $dead_click events (clicks that change nothing)."
    )
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name} ({self.organization})"


class PersonalAPIKey(models.Model):
    """A key for the REST API. Only its SHA-256 is stored; the key is shown once, at creation."""

    PREFIX = "bkl_"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    label = models.CharField(max_length=100, default="default")
    key_hash = models.CharField(max_length=64, unique=True)
    mask = models.CharField(max_length=16, help_text="First characters of the key, to recognise it.")
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.mask}... ({self.user}, {self.label})"

    @staticmethod
    def hash_key(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    @classmethod
    def issue(cls, user, label: str = "default") -> tuple["PersonalAPIKey", str]:
        key = cls.PREFIX + secrets.token_urlsafe(32)
        record = cls.objects.create(user=user, label=label, key_hash=cls.hash_key(key), mask=key[:10])
        return record, key


class IngestionWarning(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="ingestion_warnings")
    type = models.CharField(max_length=100, db_index=True)
    event_uuid = models.CharField(max_length=36, blank=True, default="")
    details = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.type} ({self.event_uuid})"


class DeadLetter(models.Model):
    """An event (or a piece of plugin work) that failed for good, kept with why and where."""

    project = models.ForeignKey(Project, null=True, blank=True, on_delete=models.CASCADE, related_name="dead_letters")
    kind = models.CharField(max_length=32, default="event", help_text="event, on_event, export_events, job")
    step = models.CharField(max_length=64)
    error = models.TextField()
    payload = models.JSONField(help_text="The raw event, or the work item, exactly as it failed.")
    context = models.JSONField(default=dict, help_text="What is needed to replay it (ip, now, sent_at, ...).")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    replayed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} at {self.step}: {self.error[:60]}"
