"""The exports' beat entries (bklog_app.celery.periodic_schedule takes them).

Imported while the Celery app is configured, before Django apps are ready: settings only.
"""

from datetime import timedelta

from django.conf import settings

from pipeline.queues import Queue


def export_beat_entries() -> dict:
    cleanup = settings.EXPORT_CLEANUP_INTERVAL_SECONDS
    watchdog = settings.EXPORT_WATCHDOG_INTERVAL_SECONDS
    return {
        "exports-clean-up": {
            "task": "bklog.exports.clean_up_expired",
            "schedule": timedelta(seconds=cleanup),
            "options": {"queue": Queue.SCHEDULED.value, "expires": cleanup},
        },
        "exports-requeue-stalled": {
            "task": "bklog.exports.requeue_stalled",
            "schedule": timedelta(seconds=watchdog),
            "options": {"queue": Queue.SCHEDULED.value, "expires": watchdog},
        },
    }
