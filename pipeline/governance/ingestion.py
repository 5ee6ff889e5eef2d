"""What ingestion calls (docs/contracts.md#ingestion-order): the tracking plan check before the
plugin chain, and the batch's definitions and violations after the INSERT.

The check runs before plugins because the plan describes what clients send: plugins add
properties of their own (GeoIP, hashing) that a plan should not have to list, and a plugin's
change must not make a client's event break, or pass, its plan.

Each process keeps every project's compiled plan (or its absence) with the project epoch it was
read under (pipeline/ingestion/projects.py). Saving a plan moves that epoch, which the batch's
project lookups read anyway, so a change reaches every worker at its next batch with no Redis
round trip of its own, and a plan's schemas are compiled once per version.
"""

from collections.abc import Iterable

import structlog
from redis.client import Pipeline

from bklog_app.governance.models import TrackingPlan
from pipeline import bounded
from pipeline.errors import is_outage
from pipeline.governance import definitions, violations
from pipeline.governance.plans import CompiledPlan, compile_plan
from pipeline.ingestion import projects
from pipeline.storage.events import EventRow

logger = structlog.get_logger(__name__)

# project id -> (project epoch, plan version or 0, compiled plan or None)
_plans: dict[int, tuple[bytes | None, int, CompiledPlan | None]] = {}
_COLUMNS = ("project_id", "version", "mode", "allow_unplanned_events", "on_unknown_property", "events")
_NEVER = b"\0never"  # not an epoch: a project whose plan was never read


class TrackingPlanViolation(Exception):
    """An event the project's plan, in enforce mode, refuses; it is dead-lettered with step `schema`."""


def apply_tracking_plan(project_id: int, raw: dict, event_uuid: str) -> dict:
    """The properties the plugin chain gets: the event's own, less those an enforced plan strips.
    Records what the plan finds; raises TrackingPlanViolation when an enforced plan refuses it."""
    properties = dict(raw.get("properties") or {})
    plan = plan_for(project_id)
    if plan is None or plan.mode == "off":
        return properties
    event = str(raw.get("event"))
    verdict = plan.judge(event, properties)
    if not verdict.violations and not verdict.unknown_properties:
        return properties
    refused = plan.mode == "enforce" and bool(verdict.violations)
    violations.note(project_id, event_uuid, event, plan.mode, verdict, refused=refused)
    if plan.mode == "enforce":
        if refused:
            raise TrackingPlanViolation(verdict.text(event))
        for key in verdict.unknown_properties:
            del properties[key]
    return properties


def record_batch(rows: list[EventRow], pipe: Pipeline) -> None:
    """After the INSERT: definitions of what was stored (their volumes added to `pipe`, the
    batch's Redis writes), and the batch's plan violations. Only an outage raises (the batch is
    retried); anything else is logged and ingestion goes on."""
    _guarded(definitions.note_stored, rows, pipe)
    _guarded(violations.flush, rows)


def _guarded(write, *args) -> None:
    try:
        write(*args)
    except Exception as exc:
        if is_outage(exc):
            raise
        logger.exception("data governance upkeep failed; the events are stored", step=write.__module__)


def load_plans(project_ids: Iterable[int]) -> None:
    """Read the plans of those of these projects not read under the current epoch in one query:
    an ingestion batch asks for all its projects' at once rather than a query per project."""
    epoch = projects.cached_epoch()
    stale = sorted({project_id for project_id in project_ids if _plans.get(project_id, (_NEVER,))[0] != epoch})
    if len(stale) < 2:  # plan_for asks for one itself
        return
    rows = {row["project_id"]: row for row in TrackingPlan.objects.filter(project_id__in=stale).values(*_COLUMNS)}
    for project_id in stale:
        try:
            _keep(project_id, epoch, rows.get(project_id))
        except Exception as exc:  # a plan that does not compile: plan_for raises it on the project's events
            if is_outage(exc):
                raise


def plan_for(project_id: int) -> CompiledPlan | None:
    epoch = projects.cached_epoch()
    hit = _plans.get(project_id)
    if hit is not None and hit[0] == epoch:
        return hit[2]
    return _keep(project_id, epoch, TrackingPlan.objects.filter(project_id=project_id).values(*_COLUMNS).first())


def _keep(project_id: int, epoch: bytes | None, row: dict | None) -> CompiledPlan | None:
    """Compile the plan of `row` (None: the project has none) unless its version is compiled."""
    hit = _plans.get(project_id)
    if row is None:
        compiled = None
    elif hit is not None and hit[1] == row["version"]:
        compiled = hit[2]
    else:
        compiled = compile_plan(row)
    _plans.pop(project_id, None)
    _plans[project_id] = (epoch, row["version"] if row else 0, compiled)
    bounded.trim(_plans)
    return compiled
