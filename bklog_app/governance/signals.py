"""A saved or deleted tracking plan reaches every worker at its next batch: the plan cache
(pipeline/governance/ingestion.py) is keyed by the project epoch, which this moves."""

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from bklog_app.governance.models import TrackingPlan
from pipeline.ingestion import projects


@receiver([post_save, post_delete], sender=TrackingPlan, dispatch_uid="bklog-tracking-plan-cache")
def _plan_changed(sender, **kwargs) -> None:
    transaction.on_commit(projects.forget)
