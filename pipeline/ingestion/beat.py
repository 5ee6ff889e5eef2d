"""Ingestion's beat entry (bklog_app.celery.periodic_schedule takes it): the capture journal
sweep (pipeline/ingestion/journal.py). Settings only: imported before Django apps are ready."""

from django.conf import settings

from pipeline.queues import TaskName, every_seconds_on_scheduled


def ingestion_beat_entries() -> dict:
    every = settings.INGESTION_JOURNAL_SWEEP_SECONDS
    return {"ingestion-sweep-journal": every_seconds_on_scheduled(TaskName.SWEEP_JOURNAL, every)}
