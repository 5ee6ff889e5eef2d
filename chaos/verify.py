"""The end of a run: drain the queues, read what was stored and dead-lettered, and compare it with
what was accepted. `compare` and `unexpected_server_errors` are pure (tests/chaos/)."""

from __future__ import annotations

import json
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


def whereabouts(stack: ChaosStack, uuids: Iterable[str]) -> dict[str, list[dict]]:
    """Where the messages carrying `uuids` are in the broker when a run ends: among the
    unacknowledged (with the age of their score in kombu's index: a score kept fresh means a live
    worker holds the message), in the capture journal, or in a queue. A lost event found nowhere
    was dropped; one found among the unacknowledged was never given back. For the results JSON."""
    wanted = set(uuids)
    if not wanted:
        return {}
    client = stack.redis()
    now = time.time()
    found: dict[str, list[dict]] = {uuid: [] for uuid in wanted}

    def note(raw: dict, place: str, **extra) -> None:
        hits = wanted & _event_uuids(raw)
        for uuid in hits:
            properties = raw.get("properties") or {}
            found[uuid].append(
                {
                    "place": place,
                    "message_id": (raw.get("headers") or {}).get("id"),
                    "delivery_tag": properties.get("delivery_tag"),
                    "redelivered": (properties.get("delivery_info") or {}).get("redelivered", False),
                    **extra,
                }
            )

    scores = dict(client.zrange("unacked_index", 0, -1, withscores=True))
    for tag, value in client.hgetall("unacked").items():
        raw, _exchange, routing_key = json.loads(value)
        score = scores.get(tag)
        note(raw, "unacked", routing_key=routing_key, index_age_s=None if score is None else round(now - score, 1))
    journal_scores = dict(client.zrange("bklog:ingest:journal", 0, -1, withscores=True))
    for message_id, value in client.hgetall("bklog:ingest:journal:messages").items():
        score = journal_scores.get(message_id)
        note(json.loads(value), "journal", journal_age_s=None if score is None else round(now - score / 1000, 1))
    for queue in QUEUES:
        for value in client.lrange(queue, 0, -1):
            note(json.loads(value), f"queue {queue}")
    return found


def _event_uuids(raw: dict) -> set[str]:
    """The uuids of the events in a kombu envelope of the ingestion task (empty for any other)."""
    from pipeline.ingestion.message import parts_of
    from pipeline.ingestion.packed import PackedRequest

    properties = raw.get("properties") or {}
    headers = raw.get("headers") or {}
    try:
        kwargs = PackedRequest(
            id=headers.get("id", ""),
            delivery_info={},
            body=raw["body"],
            body_encoding=properties.get("body_encoding"),
            compression=headers.get("compression"),
            content_type=raw.get("content-type", "application/json"),
            content_encoding=raw.get("content-encoding", "utf-8"),
            accept=None,
        ).kwargs
        return {
            event.get("uuid") for part in parts_of(kwargs) for event in part.get("events") or () if event.get("uuid")
        }
    except Exception:  # not an ingestion message
        return set()


def unacked_left(stack: ChaosStack) -> list[dict]:
    """The messages still unacknowledged when a run ends: task, queue, and the age of their score
    in kombu's index (fresh: a live worker holds them; old: nobody restored them)."""
    client = stack.redis()
    now = time.time()
    scores = dict(client.zrange("unacked_index", 0, -1, withscores=True))
    out = []
    for tag, value in client.hgetall("unacked").items():
        raw, _exchange, routing_key = json.loads(value)
        score = scores.get(tag)
        out.append(
            {
                "delivery_tag": tag.decode(),
                "task": (raw.get("headers") or {}).get("task"),
                "routing_key": routing_key,
                "index_age_s": None if score is None else round(now - score, 1),
                "event_uuids": sorted(_event_uuids(raw))[:5],
            }
        )
    return out
