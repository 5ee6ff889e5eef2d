"""Tracking plans, compiled: what an event's name and properties are judged against.

A plan is `{"mode", "allow_unplanned_events", "on_unknown_property", "events": {"<name>":
{"schema": <JSON Schema of the properties object>}}}` (docs/governance.md#tracking-plans).
`compile_plan` checks it and compiles every schema once with jsonschema-rs; `judge` then costs
a dict lookup and one validation per event. The API compiles a plan before saving it, so a
worker never meets a plan it cannot compile.
"""

from dataclasses import dataclass

import jsonschema_rs

MODES = ("off", "observe", "enforce")
ON_UNKNOWN_PROPERTY = ("allow", "strip")
UNPLANNED_EVENT = "unplanned_event"
UNKNOWN_PROPERTY = "unknown_property"


class PlanError(ValueError):
    """The plan cannot be used; the message says where and what to change."""


@dataclass(frozen=True)
class Violation:
    rule: str  # the schema keyword's path ("properties/price/type", "required/plan"), or a plan rule
    message: str

    @property
    def keyword(self) -> str:
        return self.rule.split("/")[-1] if not self.rule.startswith("required/") else "required"


@dataclass(frozen=True)
class Verdict:
    planned: bool = False
    violations: tuple[Violation, ...] = ()
    unknown_properties: tuple[str, ...] = ()  # what `strip` drops

    def text(self, event: str) -> str:
        return f"{event!r} breaks the tracking plan: " + "; ".join(f"{v.rule}: {v.message}" for v in self.violations)


_UNPLANNED_ALLOWED = Verdict()
_PLANNED_VALID = Verdict(planned=True)


@dataclass(frozen=True)
class _PlannedEvent:
    validator: "jsonschema_rs.Validator"
    known: frozenset[str] | None  # the schema's `properties` keys; None when it lists none


@dataclass(frozen=True)
class CompiledPlan:
    mode: str
    allow_unplanned_events: bool
    strip_unknown: bool
    events: dict[str, _PlannedEvent]

    def judge(self, event: str, properties: dict) -> Verdict:
        """The plan's verdict on one event: violations, and which properties `strip` would drop."""
        planned = self.events.get(event)
        if planned is None:
            if self.allow_unplanned_events or event.startswith("$"):
                return _UNPLANNED_ALLOWED
            return Verdict(violations=(Violation(UNPLANNED_EVENT, f"{event!r} is not in the tracking plan"),))
        unknown: tuple[str, ...] = ()
        if self.strip_unknown and planned.known is not None:
            unknown = tuple(key for key in properties if key not in planned.known and key[:1] != "$")
            if unknown:
                properties = {key: value for key, value in properties.items() if key in planned.known or key[:1] == "$"}
        if planned.validator.is_valid(properties):
            return Verdict(planned=True, unknown_properties=unknown) if unknown else _PLANNED_VALID
        violations = tuple(_violation(error) for error in planned.validator.iter_errors(properties))
        return Verdict(planned=True, violations=violations, unknown_properties=unknown)


def check_event(plan: CompiledPlan, event: str, properties: dict) -> dict:
    """What ingestion would do with this event under this plan, and why (the API's and the
    admin's check). The violations are listed whatever the mode."""
    verdict = plan.judge(event, properties)
    if plan.mode == "off":
        outcome = "stored"
    elif plan.mode == "observe":
        outcome = "stored_with_violations" if verdict.violations or verdict.unknown_properties else "stored"
    elif verdict.violations:
        outcome = "dead_lettered"
    else:
        outcome = "stored_stripped" if verdict.unknown_properties else "stored"
    return {
        "outcome": outcome,
        "planned": verdict.planned,
        "valid": not verdict.violations,
        "violations": [{"rule": v.rule, "message": v.message} for v in verdict.violations],
        "unknown_properties": sorted(verdict.unknown_properties),
    }


def compile_plan(plan: dict) -> CompiledPlan:
    """Check and compile a plan body; raise PlanError saying what is wrong."""
    if not isinstance(plan, dict):
        raise PlanError("A tracking plan is a JSON object.")
    mode = plan.get("mode", "off")
    if mode not in MODES:
        raise PlanError(f"mode must be one of {', '.join(MODES)}.")
    on_unknown = plan.get("on_unknown_property", "allow")
    if on_unknown not in ON_UNKNOWN_PROPERTY:
        raise PlanError(f"on_unknown_property must be one of {', '.join(ON_UNKNOWN_PROPERTY)}.")
    events = plan.get("events") or {}
    if not isinstance(events, dict):
        raise PlanError('events must be an object: {"<event name>": {"schema": {...}}}.')
    compiled = {}
    for name, entry in events.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("schema", {}), dict):
            raise PlanError(f'events[{name!r}] must be an object with a "schema" object.')
        schema = entry.get("schema") or {"type": "object"}
        try:
            validator = jsonschema_rs.validator_for(schema, validate_formats=True)
        except (jsonschema_rs.ValidationError, ValueError) as exc:
            first = str(exc).splitlines()[0]
            raise PlanError(f"events[{name!r}].schema is not a valid JSON Schema: {first}") from None
        known = schema.get("properties")
        compiled[name] = _PlannedEvent(validator, frozenset(known) if isinstance(known, dict) else None)
    return CompiledPlan(
        mode=mode,
        allow_unplanned_events=bool(plan.get("allow_unplanned_events", True)),
        strip_unknown=on_unknown == "strip",
        events=compiled,
    )


def _violation(error: "jsonschema_rs.ValidationError") -> Violation:
    rule = "/".join(str(part) for part in error.schema_path) or "schema"
    if isinstance(error.kind, jsonschema_rs.ValidationErrorKind.Required):
        rule = f"required/{error.kind.property}"
    where = "/".join(str(part) for part in error.instance_path)
    return Violation(rule, f"{where}: {error.message}" if where else error.message)
