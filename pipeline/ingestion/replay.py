"""Replay dead-lettered events: back through ingestion as a new captured request.

An event without a uuid gets one, saved on the dead letter before it is queued, so replaying it
twice still stores it once (dedup by uuid).
"""

import uuid
from datetime import UTC, datetime

from django.db import transaction
from django.utils import timezone

from bklog_app.models import DeadLetter
from pipeline.ingestion.enqueue import enqueue
from pipeline.ingestion.message import from_context


def replay_event(letter: DeadLetter) -> None:
    payload = dict(letter.payload)
    if not payload.get("uuid"):
        payload["uuid"] = str(uuid.uuid4())
    with transaction.atomic():
        DeadLetter.objects.filter(pk=letter.pk).update(payload=payload, replayed_at=timezone.now())
    request = from_context(
        letter.context or {},
        [payload],
        project_id=letter.project_id,
        now=datetime.now(UTC).isoformat(timespec="milliseconds"),
    )
    enqueue(request, coalesce=False)  # replays come one after another: no neighbours to wait for
