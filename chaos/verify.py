"""The end of a run: drain the queues, read what was stored and dead-lettered, and compare it with
what was accepted. `compare` and `unexpected_server_errors` are pure (tests/chaos/)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg

from chaos.stack import ChaosStack

QUEUES = ("ingestion", "ingestion_overflow", "default", "scheduled", "async_export")


@dataclass
class Comparison:
    accepted: int
    stored: int
    dead_lettered: int
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    dead_letters_without_reason: list[str] = field(default_factory=list)


def compare(accepted: Iterable[str], stored_counts: dict[str, int], dead_letters: dict[str, str]) -> Comparison:
    """Every accepted uuid must be stored exactly once, or dead-lettered with a reason (not both:
    a uuid stored and dead-lettered counts as stored, the letter being a replayable extra)."""
    accepted = set(accepted)
    result = Comparison(accepted=len(accepted), stored=0, dead_lettered=0)
    for uuid in sorted(accepted):
        count = stored_counts.get(uuid, 0)
        if count:
            result.stored += 1
        elif uuid in dead_letters:
            if dead_letters[uuid].strip():
                result.dead_lettered += 1
            else:
                result.dead_letters_without_reason.append(uuid)
                result.lost.append(uuid)
        else:
            result.lost.append(uuid)
    result.duplicated = sorted(uuid for uuid, count in stored_counts.items() if count > 1)
    return result


def unexpected_server_errors(
    outcomes: Iterable[tuple[float, float, int]], outage_windows: Iterable[tuple[float, float]], grace: float = 2.0
) -> list[tuple[float, int]]:
    """5xx answers outside the outages of a store capture needs (only 503 is allowed inside).
    outcomes: (sent_at, answered_at, status)."""
    windows = [(start - grace, end + grace) for start, end in outage_windows]
    bad = []
    for sent_at, answered_at, status in outcomes:
        if status < 500:
            continue
        inside = any(start <= answered_at and sent_at <= end for start, end in windows)
        if status != 503 or not inside:
            bad.append((answered_at, status))
    return bad


def queue_depths(stack: ChaosStack) -> dict[str, int]:
    client = stack.redis()
    depths = {queue: int(client.llen(queue)) for queue in QUEUES}
    depths["unacked"] = int(client.hlen("unacked"))
    depths["journal"] = int(client.zcard("bklog:ingest:journal"))  # pipeline/ingestion/journal.py
    return depths


def stored_counts(stack: ChaosStack, project_id: int) -> dict[str, int]:
    rows = stack.clickhouse().execute(
        "SELECT toString(uuid), count() FROM events WHERE team_id = %(t)s GROUP BY uuid", {"t": project_id}
    )
    return dict(rows)


def dead_letters(stack: ChaosStack, project_id: int) -> dict[str, str]:
    """uuid -> "<step>: <error>" of the project's dead-lettered events."""
    with psycopg.connect(stack.database_url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT payload->>'uuid', step, error FROM bklog_app_deadletter WHERE project_id = %s AND kind = 'event'",
            (project_id,),
        ).fetchall()
    return {uuid: f"{step}: {error}" if error else "" for uuid, step, error in rows if uuid}


def drain(stack: ChaosStack, project_id: int, accepted: set[str], *, stall: float, timeout: float, log=print) -> float:
    """Wait until every accepted uuid is stored or dead-lettered and the queues are empty, or until
    nothing moved for `stall` seconds (a SIGKILLed worker's messages come back after the
    visibility timeout, so `stall` must be longer than that). Returns the seconds waited."""
    started = time.monotonic()
    last_progress, last_state = started, None
    while time.monotonic() - started < timeout:
        try:
            stored = stored_counts(stack, project_id)
            letters = dead_letters(stack, project_id)
            depths = queue_depths(stack)
        except Exception as exc:  # a store still recovering
            log(f"  drain: waiting for the stores ({exc})")
            time.sleep(1)
            continue
        missing = sum(1 for uuid in accepted if uuid not in stored and uuid not in letters)
        busy = depths["ingestion"] + depths["ingestion_overflow"] + depths["default"] + depths["unacked"]
        state = (missing, len(stored))  # not `busy`: messages cycling through unacked flicker it
        if missing == 0 and busy == 0:
            return time.monotonic() - started
        if state != last_state:
            log(f"  drain: {missing} accepted events not yet stored; queues {depths}")
            last_state, last_progress = state, time.monotonic()
        elif time.monotonic() - last_progress > stall:
            log(f"  drain: nothing moved for {stall:.0f}s; comparing what is there")
            break
        time.sleep(1)
    return time.monotonic() - started


def plugin_check(stack: ChaosStack, project_id: int, names: dict[str, str]) -> dict[str, dict[str, int]]:
    """Per chaos plugin: stored events it was meant to fail on, and how many of those carry it in
    $plugins_failed (all should), plus events it failed on unexpectedly."""
    from chaos.selection import raises_on, times_out_on

    rows = stack.clickhouse().execute(
        "SELECT toString(uuid), visitParamExtractRaw(properties, '$plugins_failed') FROM events WHERE team_id = %(t)s",
        {"t": project_id},
    )
    out = {}
    for folder, selected in (("chaos_raiser", raises_on), ("chaos_sleeper", times_out_on)):
        name = names[folder]
        meant = marked = unexpected = 0
        for uuid, failed in rows:
            has = name in failed
            if selected(uuid):
                meant += 1
                marked += has
            elif has:
                unexpected += 1
        out[folder] = {"meant_to_fail": meant, "marked_failed": marked, "failed_unexpectedly": unexpected}
    return out
