"""The run's table (printed) and its JSON record (chaos/results/<timestamp>.json)."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def table(result: dict) -> str:
    rows = [
        ("mode", result["mode"]),
        ("topology", result.get("topology", "single")),
        ("events accepted (200)", result["accepted"]),
        ("stored exactly once", result["stored"]),
        ("dead-lettered with a reason", result["dead_lettered"]),
        ("lost", result["lost"]),
        ("duplicated", result["duplicated"]),
        ("unexpected 5xx", result["unexpected_5xx"]),
        ("503 during outages", result["statuses"].get("503", 0)),
        ("bad requests refused with 4xx", result["bad_requests_refused"]),
        ("workers stuck", len(result["stuck"])),
        ("recovery after worker kill (s)", result.get("recovery_s_after_worker_kill")),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append("")
    lines.append(f"{'fault':<{width}}  recovery (s)")
    for name, seconds in result["faults"].items():
        lines.append(f"{name:<{width}}  {'NOT RECOVERED' if seconds is None else seconds}")
    for name, kill in result.get("worker_kills", {}).items():
        stored = "not all stored" if kill["recovery_s"] is None else f"all stored {kill['recovery_s']} s after the kill"
        lines.append(f"{name + ': held events':<{width}}  {kill['held_events']}, {stored}")
    for name, detail in result.get("fault_details", {}).items():
        lines.append(f"{name + ': detail':<{width}}  {detail}")
    for folder, check in result["plugins"].items():
        lines.append(f"{'plugin ' + folder:<{width}}  {check}")
    changed = result.get("settings_changed_for_the_suite", {})
    if changed:
        lines.append("")
        lines.append("settings changed for the suite (all others are the defaults):")
        lines += [f"  {name}={setting['value']}: {setting['reason']}" for name, setting in changed.items()]
    return "\n".join(lines)


def markdown(result: dict) -> str:
    lines = ["| | |", "|---|---|"]
    for key in (
        "accepted",
        "stored",
        "dead_lettered",
        "lost",
        "duplicated",
        "unexpected_5xx",
        "recovery_s_after_worker_kill",
    ):
        lines.append(f"| {key} | {result[key]} |")
    lines += ["", "| fault | recovery (s) |", "|---|---|"]
    lines += [f"| {name} | {seconds} |" for name, seconds in result["faults"].items()]
    return "\n".join(lines)


def worker_kill_recovery(kills: dict[str, dict]) -> float | None:
    """The slowest of the killed workers' recoveries: from the SIGKILL to the last event it held
    being stored. None when no killed worker held events (or they were never all stored)."""
    seconds = [kill["recovery_s"] for kill in kills.values() if kill["held_events"]]
    return None if not seconds or None in seconds else max(seconds)


def write(result: dict, stamp: str) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{stamp}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return path


def failures(result: dict) -> list[str]:
    out = []
    if result["lost"]:
        out.append(f"{result['lost']} accepted events lost (e.g. {result['examples']['lost'][:3]})")
    if result["duplicated"]:
        out.append(f"{result['duplicated']} events stored more than once (e.g. {result['examples']['duplicated'][:3]})")
    if result["unexpected_5xx"]:
        out.append(f"{result['unexpected_5xx']} 5xx answers outside a store outage")
    if result["stuck"]:
        out.append(f"stuck: {result['stuck']}")
    not_recovered = [name for name, seconds in result["faults"].items() if seconds is None]
    if not_recovered:
        out.append(f"faults not recovered: {not_recovered}")
    for name, kill in result.get("worker_kills", {}).items():
        if kill["held_events"] and kill["recovery_s"] is None:
            out.append(f"{name}: the {kill['held_events']} events the worker held were not all stored")
    if result["accepted"] == 0:
        out.append("no event was accepted at all")
    return out
