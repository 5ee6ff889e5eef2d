"""The plugin runtime's beat entries (bklog_app.celery.periodic_schedule takes them).

Imported while the Celery app is configured, before Django apps are ready: settings only.
"""

from datetime import timedelta

from celery.schedules import crontab
from django.conf import settings

from pipeline.queues import Queue, TaskName


def plugin_beat_entries() -> dict:
    """run_every_minute/hour/day, aligned to the clock, and the due-work poller."""
    minute_seconds = settings.PLUGIN_SCHEDULE_MINUTE_SECONDS
    # Production runs on the minute; tests shorten the minute with PLUGIN_SCHEDULE_MINUTE_SECONDS.
    minute = crontab() if minute_seconds == 60 else timedelta(seconds=minute_seconds)
    periods = {
        "minute": (minute, minute_seconds),
        "hour": (crontab(minute=0), 3600),
        "day": (crontab(minute=0, hour=0), 86400),
    }
    entries = {
        f"plugins-run-every-{kind}": {
            "task": TaskName.PLUGIN_RUN_SCHEDULED.value,
            "schedule": when,
            "kwargs": {"kind": kind, "period_seconds": seconds},
            "options": {"queue": Queue.SCHEDULED.value, "expires": seconds},
        }
        for kind, (when, seconds) in periods.items()
    }
    entries["plugins-poll-due-work"] = {
        "task": TaskName.PLUGIN_POLL_DUE_WORK.value,
        "schedule": timedelta(seconds=settings.PLUGIN_JOB_POLL_SECONDS),
        "options": {"queue": Queue.SCHEDULED.value, "expires": settings.PLUGIN_JOB_POLL_SECONDS * 2},
    }
    return entries
