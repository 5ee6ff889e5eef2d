"""The exports' beat entries (bklog_app.celery.periodic_schedule takes them).

Imported while the Celery app is configured, before Django apps are ready: settings only.
"""

from django.conf import settings

from pipeline.queues import TaskName, every_seconds_on_scheduled


def export_beat_entries() -> dict:
    cleanup = settings.EXPORT_CLEANUP_INTERVAL_SECONDS
    watchdog = settings.EXPORT_WATCHDOG_INTERVAL_SECONDS
    return {
        "exports-clean-up": every_seconds_on_scheduled(TaskName.CLEAN_UP_EXPIRED_EXPORTS, cleanup),
        "exports-requeue-stalled": every_seconds_on_scheduled(TaskName.REQUEUE_STALLED_EXPORTS, watchdog),
    }
