"""python -m chaos --mode full|ci [--topology single|cluster] [--keep]: see chaos/__init__.py and
docs/reliability.md."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from bench.cluster import NODES
from bench.stack import LOOPBACK
from chaos import report, verify
from chaos.cluster_faults import ClusterFaultRunner, cluster_schedule
from chaos.driver import CONNECTION_ERROR, Outcome, drive
from chaos.faults import FaultRunner, schedule
from chaos.stack import WORKER_PROGRAMS, ChaosClusterStack, ChaosStack, prepare, suite_settings
from chaos.traffic import bad_requests, fuzz_requests, valid_requests


@dataclass(frozen=True)
class Mode:
    requests_per_second: float
    events_per_request: int
    gap: float  # seconds of plain load between faults
    bad_every: int  # one bad request per this many
    hypothesis_examples: int
    max_seconds: float


MODES = {
    "full": Mode(100, 10, 10.0, 20, 300, 900),  # 1,000 events/s
    "ci": Mode(10, 5, 2.0, 5, 60, 400),  # 50 events/s
}


def _answered_at(outcomes: list[Outcome], uuids: list[str]) -> dict[str, float]:
    wanted = set(uuids)
    return {u: round(o.answered_at, 3) for o in outcomes if o.status == 200 for u in o.uuids if u in wanted}


def log(message: str) -> None:
    print(message, flush=True)


def mixed(valid, bad, every: int):
    bad = itertools.cycle(bad)
    for index, request in enumerate(valid):
        if index % every == every - 1:
            yield next(bad)
        yield request


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--mode", choices=sorted(MODES), default="ci")
    parser.add_argument(
        "--topology",
        choices=("single", "cluster"),
        default="single",
        help="one node (var/chaos/), or the cluster: 2x2 ClickHouse, Redis Sentinel, app nodes a and b "
        "(var/chaos-cluster/)",
    )
    parser.add_argument("--keep", action="store_true", help="leave the chaos stack running afterwards")
    args = parser.parse_args(argv)
    mode = MODES[args.mode]
    # A CI timeout or Ctrl-C still runs the `finally` below, which stops every process started.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    # The driver logs a traceback per refused connection while the stores start or are down.
    logging.getLogger("clickhouse_driver").setLevel(logging.CRITICAL)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    stack = ChaosClusterStack() if args.topology == "cluster" else ChaosStack()
    try:
        stack.ensure_running(log)
        return run(stack, args.mode, mode, stamp)
    finally:
        if not args.keep:
            stack.stop(log)


def run(stack: ChaosStack | ChaosClusterStack, mode_name: str, mode: Mode, stamp: str) -> int:
    cluster = isinstance(stack, ChaosClusterStack)
    setup = prepare(stack, stamp)
    port = stack.web_ports[0]
    log(
        f"chaos ({mode_name}, {'cluster' if cluster else 'single'}): project {setup.project_id}, "
        f"{mode.requests_per_second * mode.events_per_request:g} events/s to port(s) {stack.web_ports}"
    )
    bad = bad_requests(LOOPBACK, port, setup.fuzz_token) + fuzz_requests(
        LOOPBACK, port, setup.fuzz_token, mode.hypothesis_examples
    )
    requests = mixed(valid_requests(LOOPBACK, port, setup.token, mode.events_per_request), bad, mode.bad_every)

    outcomes: list[Outcome] = []
    accepted: set[str] = set()
    lock = threading.Lock()

    def on_outcome(outcome: Outcome) -> None:
        with lock:
            outcomes.append(outcome)
            if outcome.status == 200 and outcome.kind == "valid":
                accepted.update(outcome.uuids)

    def on_probe(uuid: str) -> None:
        with lock:
            accepted.add(uuid)

    stop = threading.Event()
    runner = (ClusterFaultRunner if cluster else FaultRunner)(stack, setup.project_id, setup.token, mode.gap, on_probe)
    faults_in_turn = cluster_schedule(mode_name, stack) if cluster else schedule(mode_name)

    def faults() -> None:
        try:
            runner.run(faults_in_turn, stop, log)
        finally:
            time.sleep(mode.gap)
            stop.set()

    thread = threading.Thread(target=faults, name="faults", daemon=True)
    thread.start()
    drive(
        LOOPBACK,
        stack.web_ports,
        requests,
        rate=mode.requests_per_second,
        stop=stop,
        max_seconds=mode.max_seconds,
        on_outcome=on_outcome,
    )
    stop.set()
    thread.join(timeout=600)

    log(f"load done: {len(outcomes)} requests, {len(accepted)} events accepted; draining")
    drained = verify.drain(stack, setup.project_id, accepted, stall=120, timeout=900, log=log)
    # Counted on `events` (on the cluster the Distributed table over every shard) without FINAL:
    # every stored row, merged away or not yet, so a uuid stored twice counts twice.
    counts = verify.stored_counts(stack, setup.project_id)
    comparison = verify.compare(accepted, counts, verify.dead_letters(stack, setup.project_id))
    windows = [(r.started_at, r.recovered_at or time.time()) for r in runner.results if r.outage]
    unexpected = verify.unexpected_server_errors(((o.sent_at, o.answered_at, o.status) for o in outcomes), windows)
    statuses = Counter(str(o.status) for o in outcomes)
    bad_outcomes = [o for o in outcomes if o.kind not in ("valid", "probe")]
    depths = verify.queue_depths(stack)
    kills = {
        r.name: {"held_events": r.held_events, "recovery_s": r.held_recovery_seconds}
        for r in runner.results
        if r.held_events is not None
    }
    stuck = (
        [
            f"node {node}: {name}"
            for node in NODES
            for name in _stuck(stack.node_ctl(node, "status", check=False).stdout)
        ]
        if cluster
        else _stuck(stack.ctl("status", check=False).stdout)
    )
    stuck += [
        f"queue {queue}: {depth}"
        for queue, depth in depths.items()
        if depth and queue in ("ingestion", "ingestion_overflow", "default", "unacked")
    ]

    result = {
        "mode": mode_name,
        "topology": "cluster" if cluster else "single",
        "accepted": comparison.accepted,
        "stored": comparison.stored,
        "dead_lettered": comparison.dead_lettered,
        "lost": len(comparison.lost),
        "duplicated": len(comparison.duplicated),
        "stored_rows": sum(counts.values()),
        "stored_distinct_uuids": len(counts),
        "duplicates_counted_on": "events, GROUP BY uuid without FINAL: rows not yet merged away count",
        "faults": {r.name: r.recovery_seconds for r in runner.results},
        "fault_details": getattr(runner, "details", {}),
        # From a worker's SIGKILL to the last event it held being stored (chaos/faults.py).
        "recovery_s_after_worker_kill": report.worker_kill_recovery(kills),
        "worker_kills": kills,
        # Where the stack differs from a default install, and why (chaos/stack.py).
        "settings_changed_for_the_suite": suite_settings(),
        "unexpected_5xx": len(unexpected),
        "statuses": dict(statuses),
        "connection_errors": statuses.get(str(CONNECTION_ERROR), 0),
        "bad_requests": len(bad_outcomes),
        "bad_requests_refused": sum(1 for o in bad_outcomes if 400 <= o.status < 500),
        "bad_request_statuses": dict(Counter(f"{o.kind}: {o.status}" for o in bad_outcomes)),
        "stuck": stuck,
        "queue_depths": depths,
        "drain_seconds": round(drained, 1),
        "plugins": verify.plugin_check(stack, setup.project_id, setup.plugin_config_names),
        # When each fault ran and when the lost examples' requests were answered: to tell which
        # fault a loss belongs to.
        "fault_times": [
            {"name": r.name, "started_at": round(r.started_at, 3), "recovered_at": r.recovered_at}
            for r in runner.results
        ],
        "lost_answered_at": _answered_at(outcomes, comparison.lost[:20]),
        # Where a lost event's message sits in the broker, and what is still unacknowledged.
        "lost_whereabouts": verify.whereabouts(stack, comparison.lost[:20]),
        "unacked_left": verify.unacked_left(stack),
        "examples": {
            "lost": comparison.lost[:20],
            "duplicated": comparison.duplicated[:20],
            "unexpected_5xx": unexpected[:20],
        },
    }
    path = report.write(result, f"cluster-{stamp}" if cluster else stamp)
    log("")
    log(report.table(result))
    log(f"\nwritten to {path}")
    problems = report.failures(result)
    for problem in problems:
        log(f"FAIL: {problem}")
    if problems:
        log(f"lost events' messages: {json.dumps(result['lost_whereabouts'])}")
        log(f"still unacknowledged: {json.dumps(result['unacked_left'])}")
    return 1 if problems else 0


def _exit_on_signal(signum, _frame) -> None:
    """Exit through the `finally` that stops the stack; a second signal (`timeout` forwards one
    too) must not cut that short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(128 + signum)


def _stuck(running: str) -> list[str]:
    """Worker programs that a supervisorctl status does not show RUNNING."""
    return [
        name
        for name, program in WORKER_PROGRAMS.items()
        if f"{program.split(':')[1]} " not in running or "RUNNING" not in _line(running, program)
    ]


def _line(status: str, program: str) -> str:
    return next((line for line in status.splitlines() if line.startswith(f"{program} ")), "")


if __name__ == "__main__":
    sys.exit(main())
