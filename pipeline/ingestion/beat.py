"""Ingestion's beat entry (bklog_app.celery.periodic_schedule takes it): the capture journal
sweep (pipeline/ingestion/journal.py). Settings only: imported before Django apps are ready."""

from datetime import timedelta

from django.conf import settings

from pipeline.queues import Queue


def ingestion_beat_entries() -> dict:
    every = settings.INGESTION_JOURNAL_SWEEP_SECONDS
    return {
        "ingestion-sweep-journal": {
            "task": "bklog.ingestion.sweep_journal",
            "schedule": timedelta(seconds=every),
            "options": {"queue": Queue.SCHEDULED.value, "expires": every},
        }
    }
