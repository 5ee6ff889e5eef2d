"""The export job rows as runs see them: claim, commit per chunk, finish. Shared by file and
historical exports.

Every write after the claim is conditional on the job still being `running` under this run's
token (`run_token`, the lease token): a run whose export was cancelled or paused, or that lost
its lease to another run, learns it from a commit that changed nothing, and stops.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from bklog_app.exports.models import RUNNABLE, ExportBase, ExportStatus


@dataclass(frozen=True)
class Next:
    """What a run asks of its task when it stops before the end: run again in `countdown` s."""

    countdown: float = 0.0


def claim(model: type[ExportBase], export_id: int, token: str) -> ExportBase | None:
    """Mark the export running under `token`; the fresh row, or None if it is not runnable."""
    now = timezone.now()
    updated = model.objects.filter(pk=export_id, status__in=RUNNABLE).update(
        status=ExportStatus.RUNNING,
        run_token=token,
        runs=F("runs") + 1,
        started_at=Coalesce(F("started_at"), now),
        heartbeat_at=now,
        error="",
    )
    if not updated:
        return None
    return model.objects.select_related("project").get(pk=export_id)


def commit(model: type[ExportBase], export_id: int, token: str, **fields) -> bool:
    """Store progress; False if the export is no longer this run's to write."""
    return bool(
        model.objects.filter(pk=export_id, status=ExportStatus.RUNNING, run_token=token).update(
            heartbeat_at=timezone.now(), **fields
        )
    )


def finish(model: type[ExportBase], export_id: int, token: str, status: ExportStatus, **fields) -> bool:
    now = timezone.now()
    return commit(model, export_id, token, status=status, finished_at=now, **fields)


def link_expiry():
    return timezone.now() + timedelta(hours=settings.EXPORT_LINK_TTL_HOURS)


def status_of(model: type[ExportBase], export_id: int) -> str | None:
    return model.objects.filter(pk=export_id).values_list("status", flat=True).first()


def failure_message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:4000]
