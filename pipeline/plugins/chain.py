"""Ingestion step 4: the project's plugin chain, each `process_event` fed the previous output.

docs/contracts.md#ingestion-order step 4: enabled configs in ascending `order`; `None` drops the event and nothing
later runs; an exception is recorded against that config and the chain goes on with the last
good event; changing `team_id` is an error, changing `distinct_id` is allowed. The names of the
configs that succeeded and failed go on the stored event.
"""

import copy
from dataclasses import dataclass, field

import orjson

from pipeline.errors import is_outage
from pipeline.plugins import registry


@dataclass
class ChainResult:
    event: dict | None  # None: a plugin dropped the event
    succeeded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class PluginOutputError(Exception):
    """process_event returned something that cannot go on down the chain."""


def run_process_event_chain(project_id: int, event: dict) -> ChainResult:
    chain = registry.project_plugins(project_id).chain
    if not chain:
        return ChainResult(event=event)
    return run_chain(chain, event)


def run_chain(chain, event: dict) -> ChainResult:
    """Each plugin changes the chain's own copy of `event`, never the caller's. What a plugin
    changed before it raised is undone from the JSON taken before its call: one copy of the event
    per chain and one serialisation per plugin, where a copy per plugin would cost a
    serialisation and a parse each. The calls are one series (registry.PluginCalls): their
    guards' set-up is paid once per event, not once per plugin."""
    result = ChainResult(event=event)
    current = None  # the chain's copy, made when the first plugin runs
    with registry.PluginCalls() as calls:
        for snapshot in chain:
            instance = registry.instance_for(snapshot)
            if instance is None or not instance.has("process_event"):
                if instance is None:
                    result.failed.append(snapshot.display_name)
                continue
            before = _saved(event if current is None else current)
            if current is None:
                current = _restored(before)
            team_id = current.get("team_id")
            try:
                output = calls.method(instance, "process_event", current)
                if output is not None:
                    check_output(output, team_id)
            except Exception as exc:
                if is_outage(exc):
                    raise
                current = _restored(before)
                registry.record_failure(snapshot, exc, method="process_event", event=current, sink=instance.sink)
                result.failed.append(snapshot.display_name)
                continue
            registry.record_success(snapshot)
            result.succeeded.append(snapshot.display_name)
            if output is None:
                result.event = None
                return result
            current = output
    if current is not None:
        result.event = current
    return result


def _saved(event: dict) -> bytes | dict:
    """The event as it is now, to undo a failed plugin's changes: its JSON, or a deep copy when
    it holds what JSON cannot (a plugin may put any object in it)."""
    try:
        return orjson.dumps(event)
    except (TypeError, orjson.JSONEncodeError):
        return copy.deepcopy(event)


def _restored(saved: bytes | dict) -> dict:
    return orjson.loads(saved) if isinstance(saved, bytes) else copy.deepcopy(saved)


def private_copy(event: dict) -> dict:
    """A deep copy of `event`."""
    return _restored(_saved(event))


def check_output(output, team_id) -> None:
    """`team_id`: the event's before the plugin ran."""
    if not isinstance(output, dict):
        raise PluginOutputError(f"process_event must return the event dict or None, not {type(output).__name__}")
    if "team_id" not in output:
        output["team_id"] = team_id
    elif output["team_id"] != team_id:
        raise PluginOutputError(
            f"process_event changed team_id from {team_id!r} to {output['team_id']!r}; "
            "a plugin cannot move an event to another project"
        )
    if output.get("distinct_id") in (None, ""):
        raise PluginOutputError("process_event returned an event without distinct_id")
    if output.get("event") in (None, ""):
        raise PluginOutputError("process_event returned an event without an event name")
    if not isinstance(output.get("properties", {}), dict):
        raise PluginOutputError("process_event returned properties that are not a dict")
