"""The scenarios. Each runs once per call on a project of its own and returns its figures.

single          single-event capture (POST /e/): latency at fixed offered rates (open loop,
                every 2xx counted), then the maximum sustained rate (wrk, closed loop).
batch           batch capture (100 events per request) end to end, a two-plugin chain and
                persons on, half the events from distinct ids that have a person already:
                events/s from the first request sent to the last event readable in ClickHouse.
lag             capture answered -> row readable in ClickHouse, at 1,000 events/s.
isolation       project A's plugin sleeps 200 ms per event while project B sends 200 events/s:
                how long until A is moved to `ingestion_overflow`, then B's lag and A's
                throughput while both send (pipeline/ingestion/isolation.py).
deletion        1,000,000 events stored for a project (inserted straight into ClickHouse), then
                one person deleted with its events: the request's time to completion, and
                ingestion's events/s while the mutation runs against before it.
governance      the `batch` load twice, persons on and no plugins: with no tracking plan, then
                with a 20-event plan enforced (docs/governance.md); events/s and ingestion CPU
                per event of each, and the plan's cost in %.
naive           the same events as `batch` through the naive pipeline (bench/naive_tasks.py).
cluster         `batch` on this one node, then on the cluster topology (bench/cluster.py: 2x2
                ClickHouse, Redis Sentinel, app nodes a and b, half the requests to each), from
                one run: the cluster's end-to-end events/s beside one node's.
clickhouse_raw  the limit: clickhouse-driver columnar INSERTs of such rows into a scratch table.
rss             the peak RSS of every process (sampled during all the others).
scale_*         the cost curves (persons, projects, chain, web, events): bench/scale.py.

Between phases the bench waits until every accepted event is readable, so one phase's backlog
does not slow the next, and it reports how many were stored against how many were accepted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench import payloads, wrk
from bench.cluster import ClusterPorts, ClusterStack
from bench.loadgen import LoadResult, LoadSpec, build_post, run_in_subprocess, write_requests
from bench.processes import cpu_seconds
from bench.stack import LOOPBACK, ROOT, Stack, api_request
from bench.stats import latency_summary, percentile

RATES = (500, 1000, 2000)
BATCH_SIZE = 100
RAW_BLOCK_ROWS = 5000
# pipeline/storage/events.py EVENT_COLUMNS (not imported: this process stays free of Django).
EVENT_COLUMNS = (
    "uuid",
    "team_id",
    "event",
    "distinct_id",
    "properties",
    "timestamp_ms",
    "created_at_ms",
    "person_id",
    "person_properties",
    "elements_chain",
)


@dataclass
class Sizes:
    rate_seconds: float
    max_rate_seconds: int
    lag_seconds: float
    batch_requests: int
    naive_events: int
    raw_rows: int
    drain_timeout: float = 300.0

    @classmethod
    def for_mode(cls, quick: bool) -> Sizes:
        if quick:
            return cls(
                rate_seconds=3, max_rate_seconds=4, lag_seconds=5, batch_requests=50, naive_events=300, raw_rows=50_000
            )
        return cls(
            rate_seconds=10,
            max_rate_seconds=10,
            lag_seconds=15,
            batch_requests=300,
            naive_events=1500,
            raw_rows=200_000,
        )


@dataclass
class Context:
    stack: Stack | ClusterStack
    key: str
    organization_id: int
    sizes: Sizes
    workdir: Path
    stamp: str
    log: Callable[[str], None] = print
    plugin_ids: dict[str, int] = field(default_factory=dict)


# -- set-up ---------------------------------------------------------------------------------

PLUGIN_CHAIN = (
    ("property_filter", {"properties": "email"}),
    ("taxonomy_standardiser", {"naming_convention": "camelCase"}),
)


def prepare(stack: Stack, sizes: Sizes, workdir: Path, log=print) -> Context:
    """An organization, a staff key, and the two built-in plugins the batch chain uses."""
    key = json.loads(stack.manage("create_api_key", "bench", "--org", "bklog bench", "--staff", "--json"))["key"]
    organizations = api_request(stack, "GET", "/api/organizations/", key)
    rows = organizations.get("results", organizations) if isinstance(organizations, dict) else organizations
    organization_id = next(row["id"] for row in rows if row["name"] == "bklog bench")
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    ctx = Context(stack, key, organization_id, sizes, workdir, stamp, log)
    for builtin, _ in PLUGIN_CHAIN:
        plugin = api_request(stack, "POST", "/api/plugins/", key, {"source_type": "builtin", "builtin": builtin})
        ctx.plugin_ids[builtin] = plugin["id"]
    return ctx


def new_project(ctx: Context, name: str, *, plugins: bool = False) -> tuple[int, str]:
    project = api_request(
        ctx.stack,
        "POST",
        "/api/projects/",
        ctx.key,
        {"organization": ctx.organization_id, "name": f"{name}-{ctx.stamp}"},
    )
    if plugins:
        for order, (builtin, config) in enumerate(PLUGIN_CHAIN):
            api_request(
                ctx.stack,
                "POST",
                f"/api/projects/{project['id']}/plugin_configs/",
                ctx.key,
                {"plugin": ctx.plugin_ids[builtin], "enabled": True, "order": order, "config": config},
            )
    return project["id"], project["api_token"]


# -- helpers --------------------------------------------------------------------------------


def send_load(
    ctx: Context,
    label: str,
    bodies: list[bytes],
    path: str,
    *,
    rate=None,
    connections=32,
    max_seconds=120.0,
    record=False,
    port: int | None = None,
) -> LoadResult:
    requests_path = ctx.workdir / f"{label}.requests"
    port = port or ctx.stack.ports.web
    write_requests(requests_path, (build_post(LOOPBACK, port, path, body) for body in bodies))
    spec = LoadSpec(
        host=LOOPBACK,
        port=port,
        requests_path=str(requests_path),
        rate=rate,
        connections=connections,
        max_seconds=max_seconds,
        label=label,
        record_answer_times=record,
    )
    try:
        return run_in_subprocess(spec)
    finally:
        requests_path.unlink(missing_ok=True)


def load_summary(result: LoadResult) -> dict:
    data = asdict(result)
    for bulky in ("latencies_ms", "answered_at"):
        data.pop(bulky)
    data["loadgen_cpu_percent"] = data.pop("cpu_percent")
    return data


def count_stored(ctx: Context, project_id: int) -> int:
    return ctx.stack.clickhouse().execute("SELECT count() FROM events WHERE team_id = %(t)s", {"t": project_id})[0][0]


def wait_for_count(ctx: Context, project_id: int, expected: int, *, interval: float = 0.05) -> tuple[float | None, int]:
    """Poll until `expected` events of the project are readable: (epoch when seen, count)."""
    client = ctx.stack.clickhouse()
    deadline = time.monotonic() + ctx.sizes.drain_timeout
    count, last_progress, last_count = 0, time.monotonic(), -1
    while time.monotonic() < deadline:
        count = client.execute("SELECT count() FROM events WHERE team_id = %(t)s", {"t": project_id})[0][0]
        if count >= expected:
            return time.time(), count
        if count != last_count:
            last_count, last_progress = count, time.monotonic()
        elif time.monotonic() - last_progress > 60:
            break  # nothing new for a minute: something is stuck; report what was stored
        time.sleep(interval)
    ctx.log(f"  ! only {count} of {expected} events became readable; see {ctx.stack.env()['BKLOG_LOG_DIR']}")
    return None, count


class CpuMeter:
    """CPU used by each program of the stack between construction and `per(n)`, in ms per unit:
    on a shared machine this moves much less than throughput does."""

    def __init__(self, ctx: Context) -> None:
        self.programs = ctx.stack.programs()
        self.before = cpu_seconds(self.programs)

    def per(self, units: int) -> dict[str, float]:
        after = cpu_seconds(self.programs)
        out = {}
        for program, seconds in sorted(after.items()):
            used = seconds - self.before.get(program, 0.0)
            if used > 0.005 and units:
                out[program] = round(1000 * used / units, 3)
        return out


# -- single ---------------------------------------------------------------------------------


def single(ctx: Context, run: int) -> dict:
    project_id, token = new_project(ctx, f"single-{run}")
    out: dict = {"rates": {}}
    accepted = 0
    for rate in RATES:
        count = int(rate * ctx.sizes.rate_seconds)
        bodies = [payloads.single_body(token, i, f"user-{i % 1000}") for i in range(count)]
        ctx.log(f"  offered {rate} req/s for {ctx.sizes.rate_seconds:g}s ({count} requests)")
        meter = CpuMeter(ctx)
        result = send_load(
            ctx, f"single-{rate}", bodies, "/e/", rate=rate, connections=64, max_seconds=ctx.sizes.rate_seconds + 20
        )
        accepted += result.ok
        _, stored = wait_for_count(ctx, project_id, accepted)
        out["rates"][str(rate)] = load_summary(result) | {
            "stored_after_phase": stored,
            "accepted_so_far": accepted,
            "cpu_ms_per_request": meter.per(result.ok),
        }
        ctx.log(
            f"    achieved {result.achieved_rps:.0f} req/s, p50 {result.p50_ms} ms, p95 {result.p95_ms} ms, "
            f"p99 {result.p99_ms} ms, errors {result.errors}, statuses {result.statuses}, "
            f"generator CPU {result.cpu_percent:.0f}%"
        )
    for connections in wrk.MAX_RATE_CONNECTIONS:
        ctx.log(
            f"  maximum rate: {'wrk' if wrk.available() else 'python closed loop'}, {connections} connections, "
            f"{ctx.sizes.max_rate_seconds}s"
        )
        meter = CpuMeter(ctx)
        if wrk.available():
            top = wrk.max_rate(
                f"{ctx.stack.base_url}/e/", token, ctx.workdir, seconds=ctx.sizes.max_rate_seconds,
                connections=connections,
            )  # fmt: skip
        else:
            count = 4000 * ctx.sizes.max_rate_seconds
            bodies = [payloads.single_body(token, i, f"user-{i % 1000}") for i in range(count)]
            result = send_load(
                ctx, "single-max", bodies, "/e/", connections=connections, max_seconds=ctx.sizes.max_rate_seconds
            )
            top = load_summary(result) | {"tool": "python", "rps": result.achieved_rps, "connections": connections}
        accepted += top["ok"]
        _, stored = wait_for_count(ctx, project_id, accepted)
        out.setdefault("max_by_connections", {})[str(connections)] = top | {
            "stored_after_phase": stored,
            "accepted_so_far": accepted,
            "cpu_ms_per_request": meter.per(top["ok"]),
        }
        ctx.log(
            f"    {top['rps']:.0f} req/s (2xx), p50 {top['p50_ms']} ms, p99 {top['p99_ms']} ms, "
            f"errors {top['errors']}, non-2xx {top.get('non_2xx')}, generator CPU {top['loadgen_cpu_percent']:.0f}%"
        )
    out["max"] = max(out["max_by_connections"].values(), key=lambda top: top["rps"])
    out["max_rps"] = out["max"]["rps"]  # 2xx answers only
    return out


# -- batch ----------------------------------------------------------------------------------


def _send_to_nodes(ctx: Context, label: str, bodies: list[bytes], path: str, **options) -> LoadResult:
    """`send_load` to every app node of a cluster at once, the bodies dealt in turn, each node from a
    load generator of its own; one node's stack gets them all."""
    if not isinstance(ctx.stack, ClusterStack):
        return send_load(ctx, label, bodies, path, **options)
    ports = ctx.stack.web_ports
    options["connections"] = max(1, options.get("connections", 32) // len(ports))
    results: list[LoadResult] = []
    threads = [
        threading.Thread(
            target=lambda n=n, port=port: results.append(
                send_load(ctx, f"{label}-{n}", bodies[n :: len(ports)], path, port=port, **options)
            )
        )
        for n, port in enumerate(ports)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(results) != len(ports):
        raise RuntimeError(f"{label}: a load generator failed; its stderr is above")
    started = min(r.started_at for r in results)
    wall = max(r.started_at + r.wall_s for r in results) - started
    statuses: dict[str, int] = {}
    for result in results:
        for status, count in result.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    ok = sum(r.ok for r in results)
    latencies = [ms for r in results for ms in r.latencies_ms]
    return LoadResult(
        label=label,
        offered_rps=None,
        requests=sum(r.requests for r in results),
        sent=sum(r.sent for r in results),
        completed=sum(r.completed for r in results),
        ok=ok,
        errors=sum(r.errors for r in results),
        unfinished=sum(r.unfinished for r in results),
        retries=sum(r.retries for r in results),
        statuses=statuses,
        wall_s=round(wall, 3),
        achieved_rps=round(ok / wall, 1) if wall else 0.0,
        cpu_s=sum(r.cpu_s for r in results),
        cpu_percent=sum(r.cpu_percent for r in results),
        latencies_ms=latencies,
        started_at=started,
        **latency_summary(latencies),
    )


def _warm_up(ctx: Context, project_id: int, token: str, tag: str) -> None:
    """Create a person for each known distinct id (through capture, as a client would)."""
    events = payloads.warm_up_events(tag)
    bodies = [payloads.batch_body(token, events[i : i + BATCH_SIZE]) for i in range(0, len(events), BATCH_SIZE)]
    result = _send_to_nodes(ctx, "warm-up", bodies, "/batch/", connections=2)
    if result.ok != len(bodies):
        raise RuntimeError(f"warm-up: {result.ok} of {len(bodies)} batch requests accepted ({result.statuses})")
    wait_for_count(ctx, project_id, len(events))


def batch(ctx: Context, run: int) -> dict:
    project_id, token = new_project(ctx, f"batch-{run}", plugins=True)
    tag = f"{ctx.stamp}b{run}"
    _warm_up(ctx, project_id, token, tag)
    count = ctx.sizes.batch_requests * BATCH_SIZE
    events = payloads.mixed_events(tag, count, offset=1)
    bodies = [payloads.batch_body(token, events[i : i + BATCH_SIZE]) for i in range(0, count, BATCH_SIZE)]
    ctx.log(f"  {len(bodies)} batch requests of {BATCH_SIZE} events, 4 connections")
    meter = CpuMeter(ctx)
    result = _send_to_nodes(ctx, "batch", bodies, "/batch/", connections=4, max_seconds=120)
    accepted = result.ok * BATCH_SIZE
    seen_at, stored = wait_for_count(ctx, project_id, payloads.KNOWN_IDS + accepted)
    stored -= payloads.KNOWN_IDS
    seconds = (seen_at - result.started_at) if seen_at else None
    check = _stored_sample(ctx, project_id)
    out = {
        "events": count,
        "accepted": accepted,
        "stored": stored,
        "seconds": round(seconds, 3) if seconds else None,
        "events_per_s": round(stored / seconds, 1) if seconds else None,
        "capture_seconds": result.wall_s,
        "capture_events_per_s": round(accepted / result.wall_s, 1),
        "capture": load_summary(result),
        "cpu_ms_per_event": meter.per(stored),
    } | check
    ctx.log(
        f"    {out['events_per_s']} events/s end to end ({stored} events in {out['seconds']} s); capture alone took "
        f"{result.wall_s:.2f} s; plugins on a stored event: {check['plugins_succeeded_on_sample']}"
    )
    return out


def _stored_sample(ctx: Context, project_id: int) -> dict:
    """Show that the chain and persons really ran: plugins on a stored event, persons seen."""
    client = ctx.stack.clickhouse()
    rows = client.execute(
        "SELECT properties FROM events WHERE team_id = %(t)s AND event = 'productViewed' LIMIT 1", {"t": project_id}
    )
    plugins = json.loads(rows[0][0]).get("$plugins_succeeded", []) if rows else []
    persons = client.execute("SELECT uniqExact(person_id) FROM events WHERE team_id = %(t)s", {"t": project_id})[0][0]
    return {"plugins_succeeded_on_sample": len(plugins), "distinct_person_ids": persons}


# -- lag ------------------------------------------------------------------------------------


class _BatchWatcher(threading.Thread):
    """Notes when each ingestion batch becomes readable. Every event of a batch shares its
    created_at_ms, so one small GROUP BY per poll sees whole batches appear."""

    def __init__(self, ctx: Context, project_id: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True, name="batch-watcher")
        self.client = ctx.stack.clickhouse()
        self.project_id = project_id
        self.interval = interval
        self.first_seen: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            rows = self.client.execute(
                "SELECT created_at_ms FROM events WHERE team_id = %(t)s GROUP BY created_at_ms", {"t": self.project_id}
            )
            now = time.time()
            for (created_at_ms,) in rows:
                self.first_seen.setdefault(created_at_ms, now)
            self.stop.wait(self.interval)


def lag(ctx: Context, run: int) -> dict:
    """Lag at 1,000 events/s, sent two ways: one event per request (1,000 requests/s, the
    hardest case), then as SDKs send them, in batches (100 requests/s of 10 events on /batch/,
    what posthog-js and posthog-python do by default)."""
    single = _lag_phase(ctx, f"lag-{run}", per_request=1)
    batched = _lag_phase(ctx, f"lag-batched-{run}", per_request=10)
    return {**single, "batched": batched}


def _lag_phase(ctx: Context, name: str, *, per_request: int) -> dict:
    project_id, token = new_project(ctx, name)
    rate = 1000  # events/s
    count = int(rate * ctx.sizes.lag_seconds)
    uuids, bodies = [], []
    for first in range(0, count, per_request):
        events = [payloads.event(i, f"user-{i % 1000}") for i in range(first, first + per_request)]
        uuids.append([event["uuid"] for event in events])
        body = {"api_key": token, **events[0]} if per_request == 1 else {"api_key": token, "batch": events}
        bodies.append(json.dumps(body).encode())
    watcher = _BatchWatcher(ctx, project_id)
    watcher.start()
    how = "single-event requests" if per_request == 1 else f"{per_request} events per request"
    ctx.log(f"  {rate} events/s ({how}) for {ctx.sizes.lag_seconds:g}s")
    meter = CpuMeter(ctx)
    try:
        result = send_load(
            ctx,
            name,
            bodies,
            "/e/" if per_request == 1 else "/batch/",
            rate=rate / per_request,
            connections=64,
            max_seconds=ctx.sizes.lag_seconds + 20,
            record=True,
        )
        wait_for_count(ctx, project_id, result.ok * per_request)
        time.sleep(watcher.interval * 3)
    finally:
        watcher.stop.set()
        watcher.join()
    stored, lags = _lags(ctx, project_id, uuids, result, watcher)
    out = {
        "offered_events_per_s": rate,
        "events_per_request": per_request,
        "achieved_events_per_s": round(result.achieved_rps * per_request, 1),
        "events": count,
        "accepted": result.ok * per_request,
        "stored": len(stored),
        "measured": len(lags),
        "p50_s": _round(percentile(lags, 50)),
        "p95_s": _round(percentile(lags, 95)),
        "p99_s": _round(percentile(lags, 99)),
        "max_s": _round(max(lags) if lags else None),
        "poll_interval_s": watcher.interval,
        "cpu_ms_per_event": meter.per(len(stored)),
        "capture": load_summary(result),
    }
    ctx.log(
        f"    lag p50 {out['p50_s']} s, p99 {out['p99_s']} s over {len(lags)} events; capture p99 {result.p99_ms} ms"
    )
    return out


def _lags(
    ctx: Context, project_id: int, uuids: list[list[str]], result: LoadResult, watcher: _BatchWatcher
) -> tuple[dict, list[float]]:
    """(uuid -> created_at_ms of the project's stored events, seconds from each request's answer
    to its events being readable)."""
    stored = dict(
        ctx.stack.clickhouse().execute(
            "SELECT toString(uuid), created_at_ms FROM events WHERE team_id = %(t)s", {"t": project_id}
        )
    )
    lags = []
    for request_uuids, answered in zip(uuids, result.answered_at, strict=True):
        for event_uuid in request_uuids:
            created = stored.get(event_uuid)
            if answered is not None and created is not None and created in watcher.first_seen:
                lags.append(max(watcher.first_seen[created] - answered, 0.0))
    return stored, lags


# -- governance -----------------------------------------------------------------------------

PLANNED_EVENTS = 20
PLAN_SCHEMA = {
    "type": "object",
    "properties": {
        "email": {"type": "string", "format": "email"},
        "plan": {"type": "string", "enum": ["free", "pro", "team"]},
        "cart_value": {"type": "number", "minimum": 0},
        "$current_url": {"type": "string"},
        "$browser_version": {"type": "integer"},
    },
    "required": ["plan", "cart_value"],
}


def governance(ctx: Context, run: int) -> dict:
    """The same batch load, end to end, to a project with no plan and to one whose 20-event plan
    is enforced (every event valid, so both store all). Persons on, no plugins, so the plan's
    cost is not hidden behind theirs. The load goes in four rounds, ABBA (BAAB on odd runs), so
    that a change in what else the machine runs weighs on both alike."""
    plan = {
        "mode": "enforce",
        "allow_unplanned_events": False,
        "events": {_planned_name(i): {"schema": PLAN_SCHEMA} for i in range(PLANNED_EVENTS)},
    }
    phases = {}
    for label in ("no_plan", "plan"):
        project_id, token = new_project(ctx, f"governance-{label}-{run}")
        tag = f"{ctx.stamp}g{label}{run}"
        _warm_up(ctx, project_id, token, tag)  # before the plan, which does not plan its events
        if label == "plan":
            api_request(ctx.stack, "PUT", f"/api/projects/{project_id}/tracking_plan/", ctx.key, plan)
        phases[label] = {"project_id": project_id, "token": token, "tag": tag, "accepted": 0, "stored": 0,
                         "seconds": 0.0, "drained": True, "cpu": {}}  # fmt: skip
    order = ("no_plan", "plan", "plan", "no_plan") if run % 2 == 0 else ("plan", "no_plan", "no_plan", "plan")
    per_round = ctx.sizes.batch_requests * BATCH_SIZE // 2
    for number, label in enumerate(order):
        phase = phases[label]
        events = payloads.mixed_events(phase["tag"], per_round, offset=1 + number * per_round)
        for index, event in enumerate(events):
            event["event"] = _planned_name(index)
        bodies = [
            payloads.batch_body(phase["token"], events[i : i + BATCH_SIZE]) for i in range(0, per_round, BATCH_SIZE)
        ]
        meter = CpuMeter(ctx)
        result = send_load(ctx, f"governance-{label}", bodies, "/batch/", connections=4, max_seconds=120)
        accepted = result.ok * BATCH_SIZE
        phase["accepted"] += accepted
        seen_at, stored = wait_for_count(ctx, phase["project_id"], payloads.KNOWN_IDS + phase["accepted"])
        stored -= payloads.KNOWN_IDS + phase["stored"]
        phase["stored"] += stored
        if seen_at is None:
            phase["drained"] = False
        else:
            phase["seconds"] += seen_at - result.started_at
        for program, ms in meter.per(1).items():
            phase["cpu"][program] = phase["cpu"].get(program, 0.0) + ms
        rate = round(stored / (seen_at - result.started_at), 1) if seen_at else None
        ctx.log(f"    round {number + 1}, {label}: {rate} events/s")
    out = {}
    for label, phase in phases.items():
        cpu = {program: round(ms / phase["stored"], 3) for program, ms in phase["cpu"].items() if phase["stored"]}
        seconds = phase["seconds"] if phase["drained"] else None
        out[label] = {
            "accepted": phase["accepted"],
            "stored": phase["stored"],
            "seconds": _round(seconds),
            "events_per_s": round(phase["stored"] / seconds, 1) if seconds else None,
            "ingestion_cpu_ms_per_event": cpu.get("bklog-worker-ingestion"),
            "cpu_ms_per_event": cpu,
        }
        ctx.log(f"    {label}: {out[label]['events_per_s']} events/s, {phase['stored']} of {phase['accepted']} stored, "
                f"ingestion CPU {out[label]['ingestion_cpu_ms_per_event']} ms/event")  # fmt: skip
    out["cost_percent"] = _cost(out["no_plan"]["events_per_s"], out["plan"]["events_per_s"])
    out["ingestion_cpu_cost_percent"] = _cost(
        out["no_plan"]["ingestion_cpu_ms_per_event"], out["plan"]["ingestion_cpu_ms_per_event"], higher_is_worse=True
    )
    ctx.log(f"    the plan costs {out['cost_percent']} % of events/s, {out['ingestion_cpu_cost_percent']} % of "
            "ingestion CPU per event")  # fmt: skip
    return out


def _planned_name(index: int) -> str:
    return f"planned event {index % PLANNED_EVENTS:02d}"


def _cost(base: float | None, other: float | None, *, higher_is_worse: bool = False) -> float | None:
    """How much worse `other` is than `base`, in % of `base`: lower events/s, or higher CPU."""
    if not base or other is None:
        return None
    return round(100 * ((other - base) if higher_is_worse else (base - other)) / base, 1)


# -- isolation ------------------------------------------------------------------------------

SLOW_PLUGIN_MANIFEST = json.dumps({"name": "bench: 200 ms per event", "config": []})
SLOW_PLUGIN_CODE = """
import time

def process_event(event, meta):
    time.sleep(0.2)
    return event
"""
ISOLATION_B_RATE = 200  # events/s, in requests of 10
ISOLATION_A_RATE = 20  # events/s offered to the slow project: four times what 200 ms per event allows one process


def isolation(ctx: Context, run: int) -> dict:
    """A slow project and a normal one share the stack. A is sent events until the batches that
    run its plugin move it to overflow (reported: how long that took); then both send at once,
    and B's lag (capture answered -> readable) is measured as in `lag`, and A's throughput."""
    slow_id, slow_token = new_project(ctx, f"isolation-slow-{run}")
    plugin = api_request(
        ctx.stack,
        "POST",
        "/api/plugins/",
        ctx.key,
        {
            "name": f"bench slow {ctx.stamp}-{run}",
            "source_type": "source",
            "source": {"plugin.json": SLOW_PLUGIN_MANIFEST, "plugin.py": SLOW_PLUGIN_CODE},
        },
    )
    api_request(
        ctx.stack,
        "POST",
        f"/api/projects/{slow_id}/plugin_configs/",
        ctx.key,
        {"plugin": plugin["id"], "enabled": True, "order": 0, "config": {}},
    )
    fast_id, fast_token = new_project(ctx, f"isolation-fast-{run}")

    ctx.log("  project A (plugin sleeps 200 ms per event): 40 events, until it is moved aside")
    detect = [payloads.event(i, f"slow-{i % 50}") for i in range(40)]
    started = time.monotonic()
    sent = send_load(
        ctx, "isolation-detect", [_batch(slow_token, detect[i : i + 10]) for i in range(0, 40, 10)], "/batch/"
    )
    state = _wait_for_state(ctx, slow_id, "overflow", timeout=120)
    moved_after = time.monotonic() - started if state["state"] == "overflow" else None
    ctx.log(f"    A is {state['state']} after {moved_after and round(moved_after, 1)} s: {state['why']}")

    seconds = ctx.sizes.lag_seconds
    slow_events = [payloads.event(i, f"slow-{i % 50}") for i in range(40, 40 + int(ISOLATION_A_RATE * seconds))]
    slow_bodies = [_batch(slow_token, slow_events[i : i + 10]) for i in range(0, len(slow_events), 10)]
    fast_uuids, fast_bodies = [], []
    for first in range(0, int(ISOLATION_B_RATE * seconds), 10):
        events = [payloads.event(i, f"user-{i % 1000}") for i in range(first, first + 10)]
        fast_uuids.append([event["uuid"] for event in events])
        fast_bodies.append(_batch(fast_token, events))
    ctx.log(f"  both for {seconds:g}s: A {ISOLATION_A_RATE} events/s, B {ISOLATION_B_RATE} events/s (10 per request)")
    slow_result: list[LoadResult] = []
    slow_sender = threading.Thread(
        target=lambda: slow_result.append(
            send_load(ctx, "isolation-slow", slow_bodies, "/batch/", rate=ISOLATION_A_RATE / 10, connections=4,
                  max_seconds=seconds + 20)
        )
    )  # fmt: skip
    watcher = _BatchWatcher(ctx, fast_id)
    watcher.start()
    phase_started = time.time()
    slow_sender.start()
    try:
        fast = send_load(
            ctx, "isolation-fast", fast_bodies, "/batch/", rate=ISOLATION_B_RATE / 10, connections=16,
            max_seconds=seconds + 20, record=True,
        )  # fmt: skip
        wait_for_count(ctx, fast_id, fast.ok * 10)
        time.sleep(watcher.interval * 3)
    finally:
        watcher.stop.set()
        watcher.join()
        slow_sender.join()
    slow_in_phase = count_stored(ctx, slow_id) - len(detect)
    phase_seconds = time.time() - phase_started
    stored, lags = _lags(ctx, fast_id, fast_uuids, fast, watcher)
    slow_accepted = sent.ok * 10 + slow_result[0].ok * 10
    drained_at, slow_stored = wait_for_count(ctx, slow_id, slow_accepted)
    out = {
        "a_moved_to": state["state"],
        "a_moved_after_s": _round(moved_after),
        "a_why": state["why"],
        "b_offered_events_per_s": ISOLATION_B_RATE,
        "b_accepted": fast.ok * 10,
        "b_stored": len(stored),
        "b_measured": len(lags),
        "b_lag_p50_s": _round(percentile(lags, 50)),
        "b_lag_p95_s": _round(percentile(lags, 95)),
        "b_lag_p99_s": _round(percentile(lags, 99)),
        "b_lag_max_s": _round(max(lags) if lags else None),
        "a_offered_events_per_s": ISOLATION_A_RATE,
        "a_accepted": slow_accepted,
        "a_stored": slow_stored,
        "a_events_per_s_while_b_sent": round(slow_in_phase / phase_seconds, 2),
        "a_drained_s": _round(drained_at - phase_started) if drained_at else None,
        "a_state_after": _project_state(ctx, slow_id)["state"],
    }
    ctx.log(
        f"    B lag p50 {out['b_lag_p50_s']} s, p99 {out['b_lag_p99_s']} s over {len(lags)} events; "
        f"A {out['a_events_per_s_while_b_sent']} events/s while B sent, all {slow_stored} of {slow_accepted} "
        f"stored {out['a_drained_s']} s after the phase began"
    )
    return out


def _batch(token: str, events: list[dict]) -> bytes:
    return json.dumps({"api_key": token, "batch": events}).encode()


def _project_state(ctx: Context, project_id: int) -> dict:
    return api_request(ctx.stack, "GET", f"/api/projects/{project_id}/", ctx.key)["ingestion_state"]


def _wait_for_state(ctx: Context, project_id: int, wanted: str, *, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    state = _project_state(ctx, project_id)
    while state["state"] != wanted and time.monotonic() < deadline:
        time.sleep(0.2)
        state = _project_state(ctx, project_id)
    return state


# -- deletion -------------------------------------------------------------------------------

DELETION_ROWS = 1_000_000
DELETION_BLOCK_ROWS = 100_000
DELETION_DISTINCT_IDS = 10_000
DELETION_DAYS = 90  # three monthly partitions
DELETION_LOAD_RATE = 15  # requests/s of 100 events into another project, below the stack's maximum
DELETION_LOAD_S = 40
DELETION_DELETE_AFTER_S = 15
DELETION_BEFORE_WINDOW_S = 8


def deletion(ctx: Context, run: int) -> dict:
    """A project with DELETION_ROWS stored events, one of whose distinct ids has a person (made by
    real capture); DELETE the person with ?delete_events=true and follow the request to its end.
    Meanwhile another project gets a steady load: its stored events/s over the seconds before the
    DELETE and over the mutation's run are the ingestion figures."""
    project_id, token = new_project(ctx, f"deletion-{run}")
    load_id, load_token = new_project(ctx, f"deletion-load-{run}")
    victim = f"victim-{ctx.stamp}-{run}"
    client = ctx.stack.clickhouse()
    send_load(ctx, "deletion-person", [_batch(token, [payloads.event(i, victim) for i in range(10)])], "/batch/")
    wait_for_count(ctx, project_id, 10)
    person = api_request(ctx.stack, "GET", f"/api/projects/{project_id}/persons/?distinct_id={victim}", ctx.key)
    person_id = person["results"][0]["id"]

    ctx.log(f"  {DELETION_ROWS:,} events into ClickHouse, {DELETION_BLOCK_ROWS:,} per INSERT")
    started = time.perf_counter()
    _insert_deletion_rows(ctx, client, project_id, victim, uuid.UUID(person_id))
    insert_s = time.perf_counter() - started
    stored = count_stored(ctx, project_id)
    victim_rows = client.execute(
        "SELECT count() FROM events WHERE team_id = %(t)s AND distinct_id = %(d)s", {"t": project_id, "d": victim}
    )[0][0]
    parts = client.execute(
        "SELECT count(), sum(rows) FROM system.parts WHERE database = currentDatabase() AND table = 'events' AND active"
    )[0]
    ctx.log(f"    stored {stored:,} ({victim_rows:,} of the person) in {insert_s:.1f} s; table: {parts[0]} parts")

    ctx.log(
        f"  {DELETION_LOAD_RATE * BATCH_SIZE} events/s offered to another project; "
        f"DELETE after {DELETION_DELETE_AFTER_S} s"
    )
    events = payloads.mixed_events(f"{ctx.stamp}d{run}", int(DELETION_LOAD_RATE * DELETION_LOAD_S) * BATCH_SIZE)
    bodies = [payloads.batch_body(load_token, events[i : i + BATCH_SIZE]) for i in range(0, len(events), BATCH_SIZE)]
    sampler = _CountSampler(ctx, load_id)
    sampler.start()
    loaded: list[LoadResult] = []
    sender = threading.Thread(
        target=lambda: loaded.append(
            send_load(ctx, "deletion-load", bodies, "/batch/", rate=DELETION_LOAD_RATE, connections=8,
                  max_seconds=DELETION_LOAD_S + 30)
        )
    )  # fmt: skip
    sender.start()
    time.sleep(DELETION_DELETE_AFTER_S)
    requested_at = time.time()
    deletion_request = api_request(
        ctx.stack, "DELETE", f"/api/projects/{project_id}/persons/{person_id}/?delete_events=true", ctx.key
    )
    follower = _DeletionFollower(ctx, project_id, deletion_request["id"])
    follower.run()
    sender.join()
    wait_for_count(ctx, load_id, loaded[0].ok * BATCH_SIZE)
    sampler.stop.set()
    sampler.join()
    done = follower.final or {}
    left = client.execute(
        "SELECT count() FROM events WHERE team_id = %(t)s AND distinct_id = %(d)s", {"t": project_id, "d": victim}
    )[0][0]
    running_at, done_at = follower.running_at or requested_at, follower.done_at
    before = sampler.rate(requested_at - DELETION_BEFORE_WINDOW_S, requested_at)
    during = sampler.rate(running_at, done_at) if done_at else None
    out = {
        "rows_in_project": stored,
        "rows_of_person": victim_rows,
        "table_parts": parts[0],
        "table_rows": parts[1],
        "mutation_parts": done.get("parts_total"),
        "insert_s": round(insert_s, 2),
        "status": done.get("status"),
        "rows_affected": done.get("rows_affected"),
        "rows_left": left,
        "request_to_done_s": _round(done_at - requested_at) if done_at else None,
        "mutation_s": _round(done_at - running_at) if done_at else None,
        "ingest_offered_events_per_s": DELETION_LOAD_RATE * BATCH_SIZE,
        "ingest_before_events_per_s": before,
        "ingest_while_mutation_ran_events_per_s": during,
        "ingest_accepted": loaded[0].ok * BATCH_SIZE,
    }
    ctx.log(
        f"    deletion {out['status']}: {out['rows_affected']} rows, {out['request_to_done_s']} s from DELETE to done "
        f"(mutation of {out['mutation_parts']} parts, {out['mutation_s']} s); ingestion {before} events/s before, "
        f"{during} while it ran"
    )
    return out


def _insert_deletion_rows(ctx: Context, client, project_id: int, victim: str, person: uuid.UUID) -> None:
    """DELETION_ROWS rows over DELETION_DAYS days; one in DELETION_DISTINCT_IDS is the person's."""
    now_ms = int(time.time() * 1000)
    day_ms = 86_400_000
    columns = ", ".join(EVENT_COLUMNS)
    properties = json.dumps(payloads.event(0, "x")["properties"])
    other_person = uuid.uuid4()
    for start in range(0, DELETION_ROWS, DELETION_BLOCK_ROWS):
        rows = range(start, min(start + DELETION_BLOCK_ROWS, DELETION_ROWS))
        ids = [victim if i % DELETION_DISTINCT_IDS == 0 else f"user-{i % DELETION_DISTINCT_IDS}" for i in rows]
        block = [
            [uuid.uuid4() for _ in rows],
            [project_id] * len(rows),
            ["product viewed" if i % 3 else "$pageview" for i in rows],
            ids,
            [properties] * len(rows),
            [now_ms - (i * DELETION_DAYS * day_ms) // DELETION_ROWS for i in rows],
            [now_ms] * len(rows),
            [person if d == victim else other_person for d in ids],
            ["{}"] * len(rows),
            [""] * len(rows),
        ]
        client.execute(f"INSERT INTO events ({columns}) VALUES", block, columnar=True)


class _CountSampler(threading.Thread):
    """The project's stored count every 0.2 s, to read its ingestion rate over any window."""

    def __init__(self, ctx: Context, project_id: int) -> None:
        super().__init__(daemon=True)
        self.ctx, self.project_id = ctx, project_id
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        client = self.ctx.stack.clickhouse()
        while not self.stop.is_set():
            count = client.execute("SELECT count() FROM events WHERE team_id = %(t)s", {"t": self.project_id})[0][0]
            self.samples.append((time.time(), count))
            time.sleep(0.2)

    def rate(self, start: float, end: float) -> float | None:
        inside = [(t, c) for t, c in self.samples if start <= t <= end]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return round((c1 - c0) / (t1 - t0), 1)


class _DeletionFollower:
    """Polls the deletion request until it is finished."""

    def __init__(self, ctx: Context, project_id: int, deletion_id: int) -> None:
        self.ctx, self.project_id, self.deletion_id = ctx, project_id, deletion_id
        self.running_at: float | None = None
        self.done_at: float | None = None
        self.final: dict | None = None

    def run(self) -> None:
        path = f"/api/projects/{self.project_id}/deletions/{self.deletion_id}/"
        deadline = time.monotonic() + self.ctx.sizes.drain_timeout
        while time.monotonic() < deadline:
            body = api_request(self.ctx.stack, "GET", path, self.ctx.key)
            now = time.time()
            if body["status"] == "running" and self.running_at is None:
                self.running_at = now
            if body["status"] in ("succeeded", "failed"):
                self.done_at, self.final = now, body
                return
            time.sleep(0.1)


# -- naive ----------------------------------------------------------------------------------


def naive(ctx: Context, run: int) -> dict:
    project_id, token = new_project(ctx, f"naive-{run}", plugins=True)
    tag = f"{ctx.stamp}n{run}"
    _warm_up(ctx, project_id, token, tag)
    count = ctx.sizes.naive_events
    events = payloads.mixed_events(tag, count, offset=1)
    spec = {
        "token": token,
        "project_id": project_id,
        "events": events,
        "now": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    ctx.log(f"  {count} events, one Celery task and one INSERT each")
    meter = CpuMeter(ctx)
    completed = subprocess.run(
        [sys.executable, "-m", "bench.naive_tasks"],
        input=json.dumps(spec).encode(),
        capture_output=True,
        env=ctx.stack.env(),
        cwd=ROOT,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"publishing the naive tasks failed:\n{completed.stderr.decode()[-3000:]}")
    published = json.loads(completed.stdout)
    seen_at, stored = wait_for_count(ctx, project_id, payloads.KNOWN_IDS + count)
    stored -= payloads.KNOWN_IDS
    seconds = (seen_at - published["started_at"]) if seen_at else None
    out = {
        "events": count,
        "stored": stored,
        "seconds": round(seconds, 3) if seconds else None,
        "events_per_s": round(stored / seconds, 1) if seconds else None,
        "publish_seconds": round(published["published_at"] - published["started_at"], 3),
        "cpu_ms_per_event": meter.per(stored),
    }
    ctx.log(f"    {out['events_per_s']} events/s ({stored} events in {out['seconds']} s)")
    return out


# -- clickhouse_raw ---------------------------------------------------------------------------


def clickhouse_raw(ctx: Context, run: int) -> dict:
    client = ctx.stack.clickhouse()
    client.execute("CREATE TABLE IF NOT EXISTS bench_raw_events AS events")
    client.execute("TRUNCATE TABLE bench_raw_events")
    count = ctx.sizes.raw_rows
    events = payloads.mixed_events(f"{ctx.stamp}r{run}", count)
    now_ms = int(time.time() * 1000)
    person = uuid.uuid4()
    person_json = json.dumps({"plan": "pro", "last_seen_page": "/products/3"})
    blocks = []
    for start in range(0, count, RAW_BLOCK_ROWS):
        chunk = events[start : start + RAW_BLOCK_ROWS]
        blocks.append(
            [
                [uuid.UUID(e["uuid"]) for e in chunk],
                [1] * len(chunk),
                [e["event"] for e in chunk],
                [e["distinct_id"] for e in chunk],
                [json.dumps(e["properties"]) for e in chunk],
                [now_ms] * len(chunk),
                [now_ms] * len(chunk),
                [person] * len(chunk),
                [person_json] * len(chunk),
                [""] * len(chunk),
            ]
        )
    columns = ", ".join(EVENT_COLUMNS)
    ctx.log(f"  {count} rows in INSERTs of {RAW_BLOCK_ROWS} (columnar)")
    started = time.perf_counter()
    for block in blocks:
        client.execute(f"INSERT INTO bench_raw_events ({columns}) VALUES", block, columnar=True)
    seconds = time.perf_counter() - started
    stored = client.execute("SELECT count() FROM bench_raw_events")[0][0]
    client.execute("TRUNCATE TABLE bench_raw_events")
    out = {"rows": count, "stored": stored, "seconds": round(seconds, 3), "events_per_s": round(count / seconds, 1)}
    ctx.log(f"    {out['events_per_s']:.0f} rows/s")
    return out


# -- cluster --------------------------------------------------------------------------------

BENCH_CLUSTER_PORTS = ClusterPorts(stores=32100, postgres=32130, web=(18001, 18002))


def cluster(ctx: Context, run: int) -> dict:
    """`batch` on this node, then on the cluster (started under var/bench-cluster/ unless it runs,
    and stopped after unless it ran): the same events, the same plugin chain and persons, each
    node's load generator sending half the requests with 2 connections (4 in all, as on one node).

    On one 2-core machine the cluster can only be slower: the same cores now also run 4 ClickHouse
    servers, ZooKeeper, 2 Redis, 3 Sentinels and two nodes' processes, every INSERT waits for both
    shards (insert_distributed_sync) and each capture for a Redis replica (WAIT). The figure proves
    the topology carries the load end to end, not that it scales."""
    ctx.log("  one node (the bench stack)")
    single = batch(ctx, run)
    stack = ClusterStack(ctx.stack.var.parent / "bench-cluster", BENCH_CLUSTER_PORTS)
    started_here = not stack.is_running()
    stack.ensure_running(ctx.log)
    try:
        ctx.log("  the cluster: 2 shards x 2 replicas, Redis Sentinel, app nodes a and b")
        on_cluster = batch(prepare(stack, ctx.sizes, ctx.workdir, ctx.log), run)
        topology = stack.versions()
    finally:
        if started_here:
            stack.stop(ctx.log)
    ratio = (
        round(on_cluster["events_per_s"] / single["events_per_s"], 3)
        if on_cluster.get("events_per_s") and single.get("events_per_s")
        else None
    )
    ctx.log(
        f"    cluster {on_cluster.get('events_per_s')} events/s end to end, one node {single.get('events_per_s')} "
        f"events/s (x{ratio})"
    )
    return {
        "events_per_s": on_cluster.get("events_per_s"),
        "single_node_events_per_s": single.get("events_per_s"),
        "cluster_over_single": ratio,
        "topology": topology,
        "cluster": on_cluster,
        "single_node": single,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


SCENARIOS: dict[str, Callable[[Context, int], dict]] = {
    "single": single,
    "batch": batch,
    "lag": lag,
    "isolation": isolation,
    "deletion": deletion,
    "governance": governance,
    "naive": naive,
    "clickhouse_raw": clickhouse_raw,
    "cluster": cluster,
}
