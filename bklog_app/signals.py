"""Keep caches in other processes honest when configuration changes."""

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from bklog_app.models import Project
from pipeline.ingestion import projects


@receiver([post_save, post_delete], sender=Project, dispatch_uid="bklog-project-cache")
def _project_changed(sender, **kwargs) -> None:
    transaction.on_commit(projects.forget)
