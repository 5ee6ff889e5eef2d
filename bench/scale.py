"""Cost curves: how each figure moves as the work grows. Each curve is a bench scenario of its own
(`python -m bench scale_persons`), measured at several sizes; its table goes into the results
under `scale.<curve>` and its plot next to the results file.

scale_persons   end-to-end events/s (the `batch` load: persons on, the two-plugin chain) with N
                persons already stored, the traffic spread over their distinct ids.
scale_projects  the same with N projects sending at once, each with its own two-plugin chain.
scale_chain     one project, a chain of N plugins; the cost per plugin per event, in time and in
                the ingestion worker's CPU, against the chain of 0.
scale_web       traffic shaped like posthog-js (gzip bodies of 10 events, autocapture elements)
                through /e/ at N events/s offered: events/s accepted, p99, and stored.
scale_events    the events API's first page and a filtered page with N events stored: p50, p99.

Large sizes are seeded straight into the stores, not through capture: persons with COPY into
PostgreSQL, events with columnar INSERTs into ClickHouse, projects with one bulk_create. The
persons and events curves seed a project per size, all of them before their first measurement,
and reuse them in later runs: every point of every run sees the same stores.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import psycopg
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench import payloads
from bench.loadgen import LoadSpec, build_post, run_in_subprocess, write_requests
from bench.scenarios import (
    BATCH_SIZE,
    EVENT_COLUMNS,
    PLUGIN_CHAIN,
    Context,
    CpuMeter,
    load_summary,
    new_project,
    send_load,
    wait_for_count,
)
from bench.stack import LOOPBACK, api_request
from bench.stats import percentile

CURVES = ("persons", "projects", "chain", "web", "events")
SCENARIO_NAMES = tuple(f"scale_{curve}" for curve in CURVES)
COPY_ROWS = 100_000
INSERT_ROWS = 200_000
PROGRESS_EVERY_S = 3.0
WEB_EVENTS_PER_REQUEST = 10
API_REPEATS = 50
STALL_S = 60


@dataclass
class ScaleSizes:
    """The sizes of each curve and the load each point gets."""

    persons: list[int]
    projects: list[int]
    chain: list[int]
    web: list[int]  # events/s offered
    events: list[int]
    batch_requests: int  # of BATCH_SIZE events, per point of the persons, projects and chain curves
    web_seconds: float

    @classmethod
    def for_mode(cls, quick: bool, overrides: dict[str, list[int]] | None = None) -> ScaleSizes:
        if quick:
            sizes = cls(
                persons=[10_000, 100_000],
                projects=[1, 100],
                chain=[0, 2, 5, 10],
                web=[500, 1000, 2000],
                events=[100_000, 1_000_000],
                batch_requests=100,
                web_seconds=4,
            )
        else:
            sizes = cls(
                persons=[10_000, 1_000_000, 5_000_000],
                projects=[1, 1_000, 10_000],
                chain=[0, 2, 5, 10],
                web=[1000, 2000, 4000],
                events=[10_000_000],
                batch_requests=300,
                web_seconds=10,
            )
        for curve, values in (overrides or {}).items():
            setattr(sizes, curve, sorted(values))
        return sizes


def parse_override(text: str) -> tuple[str, list[int]]:
    """`persons=10000,1000000` -> ("persons", [10000, 1000000]), for argparse's `type=`."""
    curve, _, values = text.partition("=")
    if curve not in CURVES:
        raise argparse.ArgumentTypeError(
            f"unknown curve {curve!r}: write CURVE=N,N,... with CURVE one of {', '.join(CURVES)}"
        )
    try:
        sizes = [int(value.replace("_", "")) for value in values.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the sizes must be whole numbers separated by commas, e.g. persons=10000,100000"
        ) from None
    smallest = 0 if curve == "chain" else 1  # a chain may be empty; no other curve has a size 0
    if min(sizes) < smallest:
        raise argparse.ArgumentTypeError(f"{text!r}: every size of the {curve} curve must be at least {smallest}")
    return curve, sizes


# -- seeding --------------------------------------------------------------------------------


def seeded_distinct_id(project_id: int, index: int) -> str:
    return f"seeded-{project_id}-{index}"


def _progress(ctx: Context, what: str, total: int) -> Callable[[int], None]:
    started = time.monotonic()
    last = [started]

    def report(done: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S or done >= total:
            last[0] = now
            rate = done / max(now - started, 1e-6)
            ctx.log(f"    {what}: {done:,} of {total:,} ({rate:,.0f}/s)")

    return report


def seed_persons(ctx: Context, project_id: int, start: int, stop: int) -> None:
    """Persons `start`..`stop` of the project, one distinct id each, by COPY in blocks of COPY_ROWS."""
    report = _progress(ctx, "persons", stop - start)
    properties = orjson.dumps({"plan": "free", "seeded": True}).decode()
    created = "2026-01-01 00:00:00+00"
    with psycopg.connect(ctx.stack.database_url, autocommit=False) as connection:
        for first in range(start, stop, COPY_ROWS):
            block = range(first, min(first + COPY_ROWS, stop))
            uuids = [uuid.uuid4() for _ in block]
            with connection.cursor() as cursor:
                with cursor.copy(
                    "COPY persons_person (uuid, project_id, properties, created_at, is_identified, version) FROM STDIN"
                ) as copy:
                    for person in uuids:
                        copy.write_row((person, project_id, properties, created, False, 0))
                with cursor.copy(
                    "COPY persons_persondistinctid (project_id, distinct_id, person_id) FROM STDIN"
                ) as copy:
                    for index, person in zip(block, uuids, strict=True):
                        copy.write_row((project_id, seeded_distinct_id(project_id, index), person))
            connection.commit()
            report(block.stop - start)


def seed_events(ctx: Context, project_id: int, start: int, stop: int, distinct_ids: int) -> None:
    """Events `start`..`stop` of the project over the last 30 days, INSERT_ROWS per columnar INSERT."""
    client = ctx.stack.clickhouse()
    report = _progress(ctx, "events", stop - start)
    columns = ", ".join(EVENT_COLUMNS)
    properties = orjson.dumps(payloads.event(0, "x")["properties"]).decode()
    now_ms = int(time.time() * 1000)
    span_ms = 30 * 86_400_000
    person = uuid.uuid4()
    for first in range(start, stop, INSERT_ROWS):
        rows = range(first, min(first + INSERT_ROWS, stop))
        block = [
            [uuid.uuid4() for _ in rows],
            [project_id] * len(rows),
            [event_name(i) for i in rows],
            [f"user-{i % distinct_ids}" for i in rows],
            [properties] * len(rows),
            [now_ms - (i * 7919 % span_ms) for i in rows],
            [now_ms] * len(rows),
            [person] * len(rows),
            ["{}"] * len(rows),
            [""] * len(rows),
        ]
        client.execute(f"INSERT INTO events ({columns}) VALUES", block, columnar=True)
        report(rows.stop - start)


def event_name(index: int) -> str:
    """One event in 50 is `signed up`: the filtered page's event name is a rare one."""
    return "signed up" if index % 50 == 0 else ("$pageview" if index % 3 else "product viewed")


def seed_projects(ctx: Context, count: int, tag: str) -> list[tuple[int, str]]:
    """`count` projects, each with the two-plugin chain, in one bulk_create (the API would take
    minutes for 10,000); every process's project cache is then told to drop what it holds."""
    script = f"""
import json
from django.db import transaction
from bklog_app.models import Project
from bklog_app.plugins.models import PluginConfig
from pipeline.ingestion import projects
chain = {json.dumps([[ctx.plugin_ids[b], c] for b, c in PLUGIN_CHAIN])}
with transaction.atomic():
    made = Project.objects.bulk_create(
        [Project(organization_id={ctx.organization_id}, name=f"{tag}-{{i}}") for i in range({count})], batch_size=2000
    )
    PluginConfig.objects.bulk_create(
        [PluginConfig(project=p, plugin_id=plugin, enabled=True, order=o, config=config)
         for p in made for o, (plugin, config) in enumerate(chain)], batch_size=2000
    )
projects.forget()
print(json.dumps([[p.pk, p.api_token] for p in made]))
"""
    return [(pk, token) for pk, token in json.loads(ctx.stack.manage("shell", "-c", script).strip().splitlines()[-1])]


# -- load -----------------------------------------------------------------------------------


def _count_between(ctx: Context, first: int, last: int) -> int:
    return ctx.stack.clickhouse().execute(
        "SELECT count() FROM events WHERE team_id >= %(a)s AND team_id <= %(b)s", {"a": first, "b": last}
    )[0][0]


def _wait_for_range(ctx: Context, first: int, last: int, expected: int) -> tuple[float | None, int]:
    """Poll until `expected` events of projects first..last are readable: (epoch when seen, count).
    No overall deadline (10,000 cold projects take minutes): it gives up after STALL_S with no new row."""
    count, last_count, last_progress = 0, -1, time.monotonic()
    while time.monotonic() - last_progress < STALL_S:
        count = _count_between(ctx, first, last)
        if count >= expected:
            return time.time(), count
        if count != last_count:
            last_count, last_progress = count, time.monotonic()
        time.sleep(0.05)
    ctx.log(f"  ! only {count} of {expected} events became readable, none new for {STALL_S} s")
    return None, count


def _end_to_end(ctx: Context, label: str, bodies: list[bytes], count: int, first: int, last: int) -> dict:
    """Send the batch bodies, wait until `count` more events of projects first..last are readable."""
    before = _count_between(ctx, first, last)
    meter = CpuMeter(ctx)
    result = send_load(ctx, label, bodies, "/batch/", connections=8, max_seconds=600)
    seen_at, stored = _wait_for_range(ctx, first, last, before + count)
    stored -= before
    seconds = seen_at - result.started_at if seen_at else None
    cpu = meter.per(stored)
    return {
        "events": count,
        "accepted": result.ok * (count // max(len(bodies), 1)),
        "stored": stored,
        "seconds": round(seconds, 3) if seconds else None,
        "events_per_s": round(stored / seconds, 1) if seconds else None,
        "ingestion_cpu_ms_per_event": cpu.get("bklog-worker-ingestion"),
        "cpu_ms_per_event": cpu,
        "capture": load_summary(result),
    }


def spread_events(tag: str, count: int, distinct_id: Callable[[int], str], seed: int) -> list[dict]:
    """The batch load's events, each from a distinct id drawn at random by `distinct_id(draw)`;
    one in four sets a person property."""
    draw = random.Random(seed)
    out = []
    for index in range(count):
        event = payloads.event(index, distinct_id(draw.randrange(1 << 62)), name="product viewed")
        if index % 4 == 0:
            event["$set"] = {"plan": event["properties"]["plan"]}
        out.append(event)
    return out


# -- posthog-js shaped traffic -----------------------------------------------------------------

_PAGES = ("/", "/pricing", "/products/42", "/cart", "/docs/getting-started")


def autocapture_elements(index: int) -> list[dict]:
    """A click's elements as posthog-js sends them in `$elements`: the clicked element first,
    then its ancestors up to <body>."""
    return [
        {
            "tag_name": "button",
            "$el_text": "Add to cart" if index % 2 else "Sign up",
            "attr__class": "btn btn-primary cta",
            "attr__data-testid": f"cta-{index % 7}",
            "classes": ["btn", "btn-primary", "cta"],
            "nth_child": 2,
            "nth_of_type": 1,
        },
        {"tag_name": "div", "attr__class": "card-footer", "classes": ["card-footer"], "nth_child": 3, "nth_of_type": 2},
        {"tag_name": "div", "attr__class": "card product", "classes": ["card", "product"], "nth_child": index % 12 + 1,
         "nth_of_type": index % 12 + 1},
        {"tag_name": "section", "attr__id": "products", "nth_child": 2, "nth_of_type": 1},
        {"tag_name": "main", "nth_child": 2, "nth_of_type": 1},
        {"tag_name": "body", "nth_child": 2, "nth_of_type": 1},
    ]  # fmt: skip


def web_events(token: str, index: int, distinct_id: str) -> list[dict]:
    """WEB_EVENTS_PER_REQUEST events as posthog-js queues them: a pageview, autocaptured clicks,
    a custom event."""
    out = []
    for offset in range(WEB_EVENTS_PER_REQUEST):
        number = index * WEB_EVENTS_PER_REQUEST + offset
        event = payloads.event(number, distinct_id)
        properties = event.pop("properties")
        properties.pop("email")
        properties.update(
            {
                "token": token,
                "distinct_id": distinct_id,
                "$pathname": _PAGES[number % len(_PAGES)],
                "$window_id": f"window-{index}",
                "$pageview_id": f"pageview-{index}",
                "$referrer": "https://www.google.com/",
                "$referring_domain": "www.google.com",
                "$is_identified": False,
                "$process_person_profile": True,
            }
        )
        if offset == 0:
            event["event"] = "$pageview"
        elif offset == WEB_EVENTS_PER_REQUEST - 1:
            event["event"] = "added to cart"
        else:
            event["event"] = "$autocapture"
            properties.update({"$event_type": "click", "$elements": autocapture_elements(number)})
        del event["distinct_id"]
        event["properties"] = properties
        out.append(event)
    return out


def web_body(token: str, index: int, distinct_id: str) -> bytes:
    """The gzip-js body posthog-js POSTs to /e/: a JSON array of events, gzipped."""
    return gzip.compress(orjson.dumps(web_events(token, index, distinct_id)), compresslevel=6)


WEB_PATH = "/e/?ip=1&_={}&ver=1.96.0&compression=gzip-js"


# -- the curves ---------------------------------------------------------------------------------


@dataclass
class ScaleCurves:
    """The five scenarios; what the persons and events curves seeded is kept for later runs."""

    sizes: ScaleSizes
    seeded: dict[str, dict] = field(default_factory=dict)
    warm: bool = False

    def scenarios(self) -> dict[str, Callable[[Context, int], dict]]:
        return {f"scale_{curve}": self._warmed(getattr(self, curve)) for curve in CURVES}

    def _warmed(self, measure: Callable[[Context, int], dict]) -> Callable[[Context, int], dict]:
        def run(ctx: Context, number: int) -> dict:
            if not self.warm:
                warm_up(ctx)
                self.warm = True
            return measure(ctx, number)

        return run

    def _seeded_projects(
        self, ctx: Context, curve: str, sizes: list[int], seed: Callable[[int, int], None], *, plugins: bool
    ) -> dict[int, tuple[int, str]]:
        """A project per size, seeded with that many rows, all before the curve's first
        measurement: every point of every run then sees the same stores."""
        if curve not in self.seeded:
            made = {}
            for size in sizes:
                project_id, token = new_project(ctx, f"scale-{curve}-{size}", plugins=plugins)
                ctx.log(f"  seeding {size:,} {curve} for project {project_id}")
                seed(project_id, size)
                made[size] = (project_id, token)
            self.seeded[curve] = made
        return self.seeded[curve]

    def persons(self, ctx: Context, run: int) -> dict:
        projects = self._seeded_projects(
            ctx, "persons", self.sizes.persons, lambda pk, size: seed_persons(ctx, pk, 0, size), plugins=True
        )
        points = []
        count = self.sizes.batch_requests * BATCH_SIZE
        for size, (project_id, token) in projects.items():
            events = spread_events(
                f"p{run}",
                count,
                lambda draw, size=size, project_id=project_id: seeded_distinct_id(project_id, draw % size),
                seed=run * 7 + size,
            )
            bodies = [payloads.batch_body(token, events[i : i + BATCH_SIZE]) for i in range(0, count, BATCH_SIZE)]
            ctx.log(f"  {size:,} persons stored: {count:,} events over their distinct ids")
            point = {"persons": size} | _end_to_end(ctx, f"persons-{size}", bodies, count, project_id, project_id)
            ctx.log(f"    {point['events_per_s']} events/s")
            points.append(point)
        return _curve("persons", points)

    def projects(self, ctx: Context, run: int) -> dict:
        points = []
        for size in self.sizes.projects:
            ctx.log(f"  {size:,} projects, each with the two-plugin chain")
            made = seed_projects(ctx, size, f"scale-projects-{ctx.stamp}-{run}-{size}")
            count = max(self.sizes.batch_requests * BATCH_SIZE, size * WEB_EVENTS_PER_REQUEST)
            per_request = WEB_EVENTS_PER_REQUEST  # as SDKs send: every project gets requests at 1 or 10,000
            bodies = []
            for number, first in enumerate(range(0, count, per_request)):
                _, token = made[number % size]
                events = payloads.mixed_events(f"{ctx.stamp}pr{run}-{size}", per_request, offset=first)
                bodies.append(payloads.batch_body(token, events))
            ids = [pk for pk, _ in made]
            first = [
                payloads.batch_body(token, payloads.mixed_events(f"{ctx.stamp}pf{run}-{size}", per_request, offset=i))
                for i, (_, token) in enumerate(made)
            ]
            ctx.log(f"    first events: one request of {per_request} per project, caches cold")
            cold = _end_to_end(ctx, f"projects-{size}-first", first, len(first) * per_request, min(ids), max(ids))
            ctx.log(f"    all stored after {cold['seconds']} s; then {count:,} events in {len(bodies):,} requests")
            point = {"projects": size, "events_per_request": per_request, "first_requests_s": cold["seconds"]}
            point |= _end_to_end(ctx, f"projects-{size}", bodies, count, min(ids), max(ids)) | {"first": cold}
            ctx.log(f"    {point['events_per_s']} events/s")
            points.append(point)
        return _curve("projects", points)

    def chain(self, ctx: Context, run: int) -> dict:
        points = []
        count = self.sizes.batch_requests * BATCH_SIZE
        for length in self.sizes.chain:
            project_id, token = new_project(ctx, f"scale-chain-{length}-{run}")
            for order in range(length):
                builtin, config = PLUGIN_CHAIN[order % len(PLUGIN_CHAIN)]
                api_request(
                    ctx.stack,
                    "POST",
                    f"/api/projects/{project_id}/plugin_configs/",
                    ctx.key,
                    {"plugin": ctx.plugin_ids[builtin], "enabled": True, "order": order, "config": config},
                )
            events = payloads.mixed_events(f"{ctx.stamp}c{run}-{length}", count)
            bodies = [payloads.batch_body(token, events[i : i + BATCH_SIZE]) for i in range(0, count, BATCH_SIZE)]
            ctx.log(f"  a chain of {length} plugins: {count:,} events")
            point = {"plugins": length} | _end_to_end(ctx, f"chain-{length}", bodies, count, project_id, project_id)
            point["plugins_succeeded_on_sample"] = _plugins_on_sample(ctx, project_id)
            ctx.log(f"    {point['events_per_s']} events/s")
            points.append(point)
        return _curve("chain", per_plugin_costs(points))

    def web(self, ctx: Context, run: int) -> dict:
        project_id, token = new_project(ctx, f"scale-web-{run}")
        points, accepted = [], 0
        for rate in self.sizes.web:
            requests_per_s = rate / WEB_EVENTS_PER_REQUEST
            requests = int(requests_per_s * self.sizes.web_seconds)
            bodies = [web_body(token, i, f"web-{run}-{i % 2000}") for i in range(requests)]
            path = WEB_PATH.format(int(time.time() * 1000))
            ctx.log(f"  {rate:,} events/s offered as {requests_per_s:g} gzip requests/s of {WEB_EVENTS_PER_REQUEST}")
            requests_path = ctx.workdir / f"web-{rate}.requests"
            port = ctx.stack.ports.web
            write_requests(
                requests_path, (build_post(LOOPBACK, port, path, body, content_type="text/plain") for body in bodies)
            )
            meter = CpuMeter(ctx)
            try:
                result = run_in_subprocess(
                    LoadSpec(
                        host=LOOPBACK,
                        port=port,
                        requests_path=str(requests_path),
                        rate=requests_per_s,
                        connections=32,
                        max_seconds=self.sizes.web_seconds + 20,
                        label=f"web-{rate}",
                    )
                )
            finally:
                requests_path.unlink(missing_ok=True)
            accepted += result.ok * WEB_EVENTS_PER_REQUEST
            _, stored = wait_for_count(ctx, project_id, accepted)
            point = {
                "offered_events_per_s": rate,
                "events_per_s": round(result.achieved_rps * WEB_EVENTS_PER_REQUEST, 1),
                "p50_ms": result.p50_ms,
                "p99_ms": result.p99_ms,
                "body_bytes": round(sum(map(len, bodies)) / max(len(bodies), 1)),
                "accepted_so_far": accepted,
                "stored_after_phase": stored,
                "cpu_ms_per_event": meter.per(result.ok * WEB_EVENTS_PER_REQUEST),
                "capture": load_summary(result),
            }
            ctx.log(f"    {point['events_per_s']} events/s accepted, p99 {result.p99_ms} ms, stored {stored:,}")
            points.append(point)
        return _curve("web", points) | {"elements_chain_on_sample": _elements_sample(ctx, project_id)}

    def events(self, ctx: Context, run: int) -> dict:
        projects = self._seeded_projects(
            ctx, "events", self.sizes.events, lambda pk, size: seed_events(ctx, pk, 0, size, 10_000), plugins=False
        )
        points = []
        for size, (project_id, _) in projects.items():
            base = f"/api/projects/{project_id}/events/"
            filtered = base + "?" + urllib.parse.urlencode({"event": "signed up", "distinct_id": "user-50"})
            point = {"events": size}
            for name, path in (("first_page", base), ("filtered", filtered)):
                timings, rows = time_api(ctx, path)
                point[name] = {
                    "p50_ms": _ms(percentile(timings, 50)),
                    "p99_ms": _ms(percentile(timings, 99)),
                    "rows": rows,
                }
            ctx.log(
                f"  {size:,} events stored: first page p50 {point['first_page']['p50_ms']} ms, "
                f"p99 {point['first_page']['p99_ms']} ms; filtered p50 {point['filtered']['p50_ms']} ms, "
                f"p99 {point['filtered']['p99_ms']} ms"
            )
            points.append(point)
        return _curve("events", points)


def warm_up(ctx: Context) -> None:
    """Freshly started workers pay for imports, connections and plugin loads on their first
    batches: the first size of a curve would look slow. Send some untimed load first."""
    project_id, token = new_project(ctx, "scale-warm-up", plugins=True)
    count = 20 * BATCH_SIZE
    events = payloads.mixed_events(f"{ctx.stamp}w", count)
    bodies = [payloads.batch_body(token, events[i : i + BATCH_SIZE]) for i in range(0, count, BATCH_SIZE)]
    ctx.log(f"  warming up: {count:,} events, not timed")
    send_load(ctx, "warm-up", bodies, "/batch/", connections=4)
    wait_for_count(ctx, project_id, count)


def time_api(ctx: Context, path: str) -> tuple[list[float], int]:
    """API_REPEATS GETs of the path one after another (after one not timed): seconds each, rows."""
    rows = len(api_request(ctx.stack, "GET", path, ctx.key)["results"])
    timings = []
    for _ in range(API_REPEATS):
        started = time.perf_counter()
        api_request(ctx.stack, "GET", path, ctx.key)
        timings.append(time.perf_counter() - started)
    return timings, rows


def per_plugin_costs(points: list[dict]) -> list[dict]:
    """Against the chain of 0: µs of end-to-end time and ms of ingestion CPU per plugin per event."""
    base = next((p for p in points if p["plugins"] == 0), None)
    out = []
    for point in points:
        extra = {"us_per_plugin_per_event": None, "ingestion_cpu_ms_per_plugin_per_event": None}
        if base and point["plugins"] and point["events_per_s"] and base["events_per_s"]:
            seconds = 1 / point["events_per_s"] - 1 / base["events_per_s"]
            extra["us_per_plugin_per_event"] = round(1e6 * seconds / point["plugins"], 2)
            if point["ingestion_cpu_ms_per_event"] is not None and base["ingestion_cpu_ms_per_event"] is not None:
                cpu = point["ingestion_cpu_ms_per_event"] - base["ingestion_cpu_ms_per_event"]
                extra["ingestion_cpu_ms_per_plugin_per_event"] = round(cpu / point["plugins"], 4)
        out.append(point | extra)
    return out


def _plugins_on_sample(ctx: Context, project_id: int) -> int:
    """How many plugins ran on a stored event: shows the chain really ran."""
    rows = ctx.stack.clickhouse().execute(
        "SELECT properties FROM events WHERE team_id = %(t)s LIMIT 1", {"t": project_id}
    )
    return len(orjson.loads(rows[0][0]).get("$plugins_succeeded", [])) if rows else 0


def fitted_cost_per_plugin(table: list[dict]) -> dict:
    """The least-squares slope over every chain length: seconds per event (1 / events/s) and
    ingestion CPU per event against the number of plugins. Steadier than any one difference."""
    out = {}
    for name, read, scale_by in (
        ("us_per_plugin_per_event_fit", lambda row: 1 / row["events_per_s"] if row["events_per_s"] else None, 1e6),
        (
            "ingestion_cpu_ms_per_plugin_per_event_fit",
            lambda row: row.get("ingestion_cpu_ms_per_event"),
            1,
        ),
    ):
        points = [(row["plugins"], read(row)) for row in table]
        points = [(x, y) for x, y in points if y is not None]
        out[name] = _slope(points, scale_by)
    return out


def _slope(points: list[tuple[float, float]], scale_by: float) -> float | None:
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    numerator = sum((x - mean_x) * (y - mean_y) for x, y in points)
    denominator = sum((x - mean_x) ** 2 for x, _ in points)
    return round(scale_by * numerator / denominator, 4)


def _elements_sample(ctx: Context, project_id: int) -> str:
    rows = ctx.stack.clickhouse().execute(
        "SELECT elements_chain FROM events WHERE team_id = %(t)s AND event = '$autocapture' LIMIT 1", {"t": project_id}
    )
    return rows[0][0] if rows else ""


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 2)


def _curve(curve: str, points: list[dict]) -> dict:
    return {"curve": curve, "points": points}


# -- results: tables and plots ------------------------------------------------------------------

# curve -> (x key, x label, [(figure path, label)]) where a figure path is dotted into a point
COLUMNS: dict[str, tuple[str, str, list[tuple[str, str]]]] = {
    "persons": ("persons", "persons stored", [("events_per_s", "events/s")]),
    "projects": (
        "projects",
        "projects sending",
        [("events_per_s", "events/s"), ("first_requests_s", "s until one request per project is stored")],
    ),
    "chain": (
        "plugins",
        "plugins in the chain",
        [
            ("events_per_s", "events/s"),
            ("ingestion_cpu_ms_per_event", "ingestion CPU ms per event"),
            ("us_per_plugin_per_event", "µs per plugin per event"),
            ("ingestion_cpu_ms_per_plugin_per_event", "ingestion CPU ms per plugin per event"),
        ],
    ),
    "web": (
        "offered_events_per_s",
        "events/s offered",
        [("events_per_s", "events/s accepted"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms")],
    ),
    "events": (
        "events",
        "events stored",
        [
            ("first_page.p50_ms", "first page p50 ms"),
            ("first_page.p99_ms", "first page p99 ms"),
            ("filtered.p50_ms", "filtered p50 ms"),
            ("filtered.p99_ms", "filtered p99 ms"),
        ],
    ),
}


def _read(point: dict, dotted: str):
    value = point
    for part in dotted.split("."):
        value = (value or {}).get(part)
    return value


def section(runs: dict[str, list[dict]]) -> dict:
    """`scale.<curve>`: per size, each figure's median over the runs; the raw runs beside."""
    out = {}
    for curve in CURVES:
        curve_runs = runs.get(f"scale_{curve}")
        if not curve_runs:
            continue
        x_key, _, figures = COLUMNS[curve]
        table = []
        for size in sorted({point[x_key] for run in curve_runs for point in run["points"]}):
            row = {x_key: size}
            for figure, _ in figures:
                values = [_read(p, figure) for run in curve_runs for p in run["points"] if p[x_key] == size]
                values = sorted(v for v in values if v is not None)
                row[figure] = values[len(values) // 2] if values else None
            table.append(row)
        out[curve] = {"table": table, "runs": curve_runs}
        if curve == "persons" and len(table) > 1 and table[0]["events_per_s"] and table[-1]["events_per_s"]:
            out[curve]["largest_vs_smallest_percent"] = round(
                100 * table[-1]["events_per_s"] / table[0]["events_per_s"], 1
            )
        if curve == "chain":
            out[curve] |= fitted_cost_per_plugin(table)
    return out


def markdown(scale: dict) -> str:
    lines = []
    for curve, data in scale.items():
        x_key, x_label, figures = COLUMNS[curve]
        lines += ["", f"scale.{curve}", "", "| " + " | ".join([x_label] + [label for _, label in figures]) + " |"]
        lines.append("|" + "---:|" * (len(figures) + 1))
        for row in data["table"]:
            cells = [f"{row[x_key]:,}"] + [_cell(row[figure]) for figure, _ in figures]
            lines.append("| " + " | ".join(cells) + " |")
        if data.get("plot"):
            lines += ["", f"![scale.{curve}]({data['plot']})"]
        summary = {key: value for key, value in data.items() if key not in ("table", "runs", "plot")}
        lines += [""] + [f"- {key}: {_cell(value)}" for key, value in summary.items()] if summary else []
    return "\n".join(lines) + ("\n" if lines else "")


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:g}" if isinstance(value, float) else f"{value:,}"


def _short(number: int) -> str:
    """10000 -> 10k, 5000000 -> 5M: an axis label."""
    for bound, suffix in ((1_000_000, "M"), (1_000, "k")):
        if number >= bound and number % (bound // 10) == 0:
            return f"{number / bound:g}{suffix}"
    return str(number)


def plot_paths(directory: Path, stamp: str, scale: dict) -> Iterator[tuple[str, Path]]:
    for curve in scale:
        yield curve, directory / f"{stamp}-scale-{curve}.png"


def plot(scale: dict, directory: Path, stamp: str) -> list[Path]:
    """One PNG per curve: each figure against the size, log x when the sizes span 10x or more."""
    written = []
    for curve, path in plot_paths(directory, stamp, scale):
        x_key, x_label, figures = COLUMNS[curve]
        table = scale[curve]["table"]
        xs = [row[x_key] for row in table]
        figure = Figure(figsize=(7, 2.6 * len(figures) + 0.6))
        FigureCanvasAgg(figure)
        axes = figure.subplots(len(figures), 1, squeeze=False)
        for axis, (name, label) in zip(axes[:, 0], figures, strict=True):
            ys = [row[name] for row in table]
            axis.plot(xs, [y if y is not None else float("nan") for y in ys], marker="o")
            for x, y in zip(xs, ys, strict=True):
                if y is not None:
                    axis.annotate(_cell(y), (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
            if min(xs) > 0 and max(xs) >= 10 * min(xs):
                axis.set_xscale("log")
                axis.minorticks_off()
            axis.set_xticks(xs, [_short(x) for x in xs])
            axis.set_ylabel(label)
            known = [y for y in ys if y is not None] or [1]
            axis.set_ylim(bottom=min(0, min(known) * 1.2), top=max(0, max(known) * 1.2) or 1)
            axis.grid(True, alpha=0.3)
        axes[-1, 0].set_xlabel(x_label)
        figure.suptitle(f"bklog scale.{curve}, {stamp}", fontsize=9)
        figure.tight_layout()
        directory.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
        written.append(path)
    return written
