"""Isolation between projects: a project whose plugin chain is slow or failing is moved aside.

Every project's events share the ingestion workers, so one project's slow `process_event` would
delay every other project's events behind it. Each ingestion batch measures, per project, the
events it ran, the seconds its plugin chain took and the events a plugin failed on, and adds them
to the project's window in Redis: one script call per batch for all its projects, never a
command per event. The same script decides the project's state:

- `healthy`: its events go to the `ingestion` queue.
- `overflow`: over the last INGESTION_ISOLATION_WINDOW_SECONDS (at least
  INGESTION_ISOLATION_MIN_EVENTS events), its chain took more than INGESTION_ISOLATION_OVERFLOW_MS
  per event, or more than INGESTION_ISOLATION_OVERFLOW_ERROR_RATE of its events had a plugin
  fail. Capture sends its events to the `ingestion_overflow` queue, which its own workers consume,
  and messages of it still on the `ingestion` queue are moved there by the batch that takes them.
  It comes back to `healthy` once the window is under the lower RECOVER thresholds and it has been
  in overflow for INGESTION_ISOLATION_MIN_OVERFLOW_SECONDS: the gap between the two thresholds
  keeps a project near the limit from flapping.
- disabled: not decided here. A plugin that keeps failing is disabled by the plugin runtime's own
  auto-disable (PLUGIN_AUTO_DISABLE_AFTER_FAILURES), which ends the cost with the plugin; a project
  that is only slow stays in overflow until an operator fixes or disables its plugin.

The state lives in one Redis hash (project id -> JSON: state, since, why). Capture does not read
it per request: it travels in the cached ProjectInfo (projects.py), and a change of state bumps
the projects' epoch in the same script, so every process's cache drops the old answer at once.
"""

import time
from dataclasses import dataclass
from functools import lru_cache

import orjson
from django.conf import settings

from pipeline.redis import get_redis

HEALTHY = "healthy"
OVERFLOW = "overflow"
STATES = (HEALTHY, OVERFLOW)
STATES_KEY = "bklog:isolation:states"  # hash: project id -> {"state", "since", "why"}
WINDOW_KEY = "bklog:isolation:window:{project_id}"  # hash: this window's and the last one's totals


@dataclass
class ChainCost:
    """What one batch spent on one project's plugin chain."""

    events: int = 0
    seconds: float = 0.0
    errors: int = 0  # events on which at least one plugin failed


@dataclass(frozen=True)
class Move:
    project_id: int
    state: str
    why: str


# KEYS: states hash, projects epoch, then one window hash per project.
# ARGV: now (ms), window (ms), min events, overflow ms, overflow error rate, recover ms,
# recover error rate, min overflow (ms), then per project: id, events, chain ms, errors.
# The previous window counts in proportion to how much of it still lies within one window of now.
_RECORD = """
local now, window, min_events = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local over_ms, over_err = tonumber(ARGV[4]), tonumber(ARGV[5])
local back_ms, back_err, min_over = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local moves = {}
for i = 3, #KEYS do
    local base = 8 + (i - 3) * 4
    local id = ARGV[base + 1]
    local w = redis.call('HMGET', KEYS[i], 'start', 'events', 'ms', 'errors', 'p_events', 'p_ms', 'p_errors')
    local start = tonumber(w[1])
    local cur = {tonumber(w[2]) or 0, tonumber(w[3]) or 0, tonumber(w[4]) or 0}
    local prev = {tonumber(w[5]) or 0, tonumber(w[6]) or 0, tonumber(w[7]) or 0}
    if start == nil or now - start >= 2 * window then
        start, cur, prev = now, {0, 0, 0}, {0, 0, 0}
    elseif now - start >= window then
        start, prev, cur = start + window, cur, {0, 0, 0}
    end
    cur[1] = cur[1] + tonumber(ARGV[base + 2])
    cur[2] = cur[2] + tonumber(ARGV[base + 3])
    cur[3] = cur[3] + tonumber(ARGV[base + 4])
    redis.call('HSET', KEYS[i], 'start', start, 'events', cur[1], 'ms', cur[2], 'errors', cur[3],
        'p_events', prev[1], 'p_ms', prev[2], 'p_errors', prev[3])
    redis.call('PEXPIRE', KEYS[i], 3 * window)
    local weight = 1 - (now - start) / window
    local events = cur[1] + prev[1] * weight
    if events >= min_events and events > 0 then
        local ms = (cur[2] + prev[2] * weight) / events
        local rate = (cur[3] + prev[3] * weight) / events
        local raw = redis.call('HGET', KEYS[1], id)
        local state, since = 'healthy', 0
        if raw then
            local decoded = cjson.decode(raw)
            state, since = decoded['state'], tonumber(decoded['since']) or 0
        end
        local why = nil
        local to = state
        if state == 'healthy' and ms > over_ms then
            to, why = 'overflow', string.format('plugin chain %.1f ms per event (limit %g ms)', ms, over_ms)
        elseif state == 'healthy' and rate > over_err then
            to = 'overflow'
            why = string.format('plugin errors on %.0f%% of events (limit %g%%)', rate * 100, over_err * 100)
        elseif state == 'overflow' and ms <= back_ms and rate <= back_err and now - since >= min_over then
            to = 'healthy'
            why = string.format('plugin chain back to %.1f ms per event, errors on %.0f%%', ms, rate * 100)
        end
        if to ~= state then
            redis.call('HSET', KEYS[1], id, cjson.encode({state = to, since = now, why = why}))
            table.insert(moves, id)
            table.insert(moves, to)
            table.insert(moves, why)
        end
    end
end
if #moves > 0 then redis.call('INCR', KEYS[2]) end
return moves
"""


def is_enabled() -> bool:
    return settings.INGESTION_ISOLATION_ENABLED


def record(costs: dict[int, ChainCost], epoch_key: str) -> list[Move]:
    """Add one batch's chain costs to each project's window and move the projects whose window
    crossed a threshold; one Redis round trip. Returns the moves (the epoch was bumped if any)."""
    if not costs or not is_enabled():
        return []
    ids = sorted(costs)
    args = [
        _now_ms(),
        int(settings.INGESTION_ISOLATION_WINDOW_SECONDS * 1000),
        settings.INGESTION_ISOLATION_MIN_EVENTS,
        settings.INGESTION_ISOLATION_OVERFLOW_MS,
        settings.INGESTION_ISOLATION_OVERFLOW_ERROR_RATE,
        settings.INGESTION_ISOLATION_RECOVER_MS,
        settings.INGESTION_ISOLATION_RECOVER_ERROR_RATE,
        int(settings.INGESTION_ISOLATION_MIN_OVERFLOW_SECONDS * 1000),
    ]
    for project_id in ids:
        cost = costs[project_id]
        args += [project_id, cost.events, round(cost.seconds * 1000, 3), cost.errors]
    keys = [STATES_KEY, epoch_key, *(WINDOW_KEY.format(project_id=project_id) for project_id in ids)]
    client = get_redis()
    result = _record_script(client)(keys=keys, args=args, client=client)
    return [Move(int(result[i]), result[i + 1].decode(), result[i + 2].decode()) for i in range(0, len(result), 3)]


def overflowing(project_ids: list[int]) -> set[int]:
    """Those of these projects in overflow: `in_overflow` for many, in one Redis round trip."""
    if not project_ids or not is_enabled():
        return set()
    raws = get_redis().hmget(STATES_KEY, [str(project_id) for project_id in project_ids])
    return {project_id for project_id, raw in zip(project_ids, raws, strict=True) if _decode(raw)["state"] == OVERFLOW}


def state_of(project_id: int) -> dict:
    """{"state", "since" (epoch seconds or None), "why" (or None)}: `healthy` if never moved."""
    raw = get_redis().hget(STATES_KEY, str(project_id))
    return _decode(raw)


def projects_in(state: str) -> list[int]:
    """The ids of the projects in `state` among those ever moved (`healthy` includes the recovered)."""
    return [int(key) for key, raw in get_redis().hgetall(STATES_KEY).items() if _decode(raw)["state"] == state]


def counts_by_state(raws: dict) -> dict[str, int]:
    """Projects per state that has ever held one, from the states hash's values (for the gauge)."""
    counts = dict.fromkeys(STATES, 0)
    for raw in raws.values():
        state = _decode(raw)["state"]
        counts[state] = counts.get(state, 0) + 1
    return counts


def in_overflow(project_id: int) -> bool:
    return is_enabled() and state_of(project_id)["state"] == OVERFLOW


def reset(project_ids: list[int], epoch_key: str) -> None:
    """Forget the projects' states and windows: healthy again at once (an operator fixed their
    plugins), and measured afresh."""
    if not project_ids:
        return
    pipe = get_redis().pipeline(transaction=True)
    pipe.hdel(STATES_KEY, *(str(project_id) for project_id in project_ids))
    pipe.delete(*(WINDOW_KEY.format(project_id=project_id) for project_id in project_ids))
    pipe.incr(epoch_key)
    pipe.execute()


def _decode(raw: bytes | None) -> dict:
    if raw is None:
        return {"state": HEALTHY, "since": None, "why": None}
    value = orjson.loads(raw)
    since = value.get("since")
    return {"state": value.get("state") or HEALTHY, "since": since / 1000 if since else None, "why": value.get("why")}


@lru_cache(maxsize=4)
def _record_script(client):
    return client.register_script(_RECORD)


def _now_ms() -> int:
    return int(time.time() * 1000)
