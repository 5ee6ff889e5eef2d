"""Tracking plan violations: counts per (project, event, rule) with a few samples.

The plan check notes each violation in this process's buffer, keyed by the event's uuid, so a
batch retried after an outage counts its events once. An event that goes on (observe, strip)
counts only if it was stored: a duplicate sent again, or an event a plugin drops, does not.
`flush`, called once per batch after the INSERT, adds the batch's counts with one UPDATE per
(event, rule) that already has a row and one INSERT per new one, and counts them in
`bklog_tracking_plan_violations_total`.
"""

from collections import defaultdict

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from bklog_app.governance.models import PlanViolation
from pipeline.governance.plans import UNKNOWN_PROPERTY, Verdict
from pipeline.metrics import TRACKING_PLAN_VIOLATIONS
from pipeline.storage.events import EventRow

SAMPLES = 5
MESSAGE_CHARS = 500
NAME_CHARS = 400

# (project, event uuid) -> (event name, mode, refused, [(rule, keyword, message)])
_pending: dict[tuple[int, str], tuple[str, str, bool, list[tuple[str, str, str]]]] = {}


def note(project_id: int, event_uuid: str, event: str, mode: str, verdict: Verdict, *, refused: bool) -> None:
    """Note what the plan found on an event; `refused`: it is dead-lettered, not stored."""
    found = [(v.rule, v.keyword, v.message[:MESSAGE_CHARS]) for v in verdict.violations]
    if verdict.unknown_properties:
        names = ", ".join(sorted(verdict.unknown_properties))
        found.append((UNKNOWN_PROPERTY, UNKNOWN_PROPERTY, f"not in the plan: {names}"[:MESSAGE_CHARS]))
    name = event.replace("\x00", "\ufffd")[:NAME_CHARS]  # PostgreSQL refuses NUL in text
    _pending[project_id, event_uuid] = (name, mode, refused, found)


def flush(rows: list[EventRow]) -> None:
    """Write what was noted since the last flush; `rows`: the events the batch stored."""
    if not _pending:
        return
    pending = dict(_pending)
    _pending.clear()
    stored = {(row.team_id, str(row.uuid)) for row in rows}
    now = timezone.now()
    counts: dict[tuple[int, str, str], int] = defaultdict(int)
    samples: dict[tuple[int, str, str], list[dict]] = defaultdict(list)
    for (project_id, event_uuid), (event, mode, refused, found) in pending.items():
        if not refused and (project_id, event_uuid) not in stored:
            continue
        for rule, keyword, message in found:
            key = (project_id, event, rule)
            counts[key] += 1
            if len(samples[key]) < SAMPLES:
                samples[key].append({"uuid": event_uuid, "mode": mode, "message": message, "at": now.isoformat()})
            TRACKING_PLAN_VIOLATIONS.labels(mode=mode, keyword=keyword).inc()
    for project_id in {key[0] for key in counts}:
        _write(project_id, {key: n for key, n in counts.items() if key[0] == project_id}, samples, now)


def _write(project_id: int, counts: dict, samples: dict, now) -> None:
    existing = {
        (row["event"], row["rule"]): row
        for row in PlanViolation.objects.filter(
            project_id=project_id, event__in={event for _, event, _ in counts}
        ).values("id", "event", "rule", "samples")
    }
    for key, count in counts.items():
        _, event, rule = key
        row = existing.get((event, rule))
        if row is None:
            try:
                with transaction.atomic():
                    PlanViolation.objects.create(
                        project_id=project_id, event=event, rule=rule, count=count, samples=samples[key],
                        first_seen_at=now, last_seen_at=now,
                    )  # fmt: skip
                continue
            except IntegrityError:  # another worker created it meanwhile: add to it
                row = PlanViolation.objects.filter(project_id=project_id, event=event, rule=rule).values(
                    "id", "samples"
                )[0]
        update = {"count": F("count") + count, "last_seen_at": now}
        if len(row["samples"]) < SAMPLES:
            update["samples"] = (row["samples"] + samples[key])[:SAMPLES]
        PlanViolation.objects.filter(id=row["id"]).update(**update)
