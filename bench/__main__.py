"""`python -m bench [scenario ...] [--runs N] [--quick]`: see docs/performance.md.

Starts the bench stack (bench/stack.py) or reuses the one that runs, runs each scenario --runs
times, and writes bench/results/<timestamp>.json and .md (the Markdown table is printed too).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from bench import machine, results, scale
from bench.processes import RssSampler
from bench.scenarios import SCENARIOS, Sizes, prepare
from bench.stack import VAR, Stack

ALL = ("single", "batch", "lag", "isolation", "governance", "deletion", "naive", "clickhouse_raw", "cluster", "rss")
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "scenarios",
        nargs="*",
        metavar="scenario",
        help=f"any of {', '.join(ALL + scale.SCENARIO_NAMES)} (default: all but the scale_ curves)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        help="runs per scenario; each figure is their median (default 3, 1 with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short phases, for checking the harness (figures are rough)"
    )
    parser.add_argument("--keep", action="store_true", help="leave the stack running when this bench started it")
    parser.add_argument(
        "--restart", action="store_true", help="restart the web process and workers first (after a code change)"
    )
    parser.add_argument("--stop", action="store_true", help="stop the bench stack and exit")
    parser.add_argument(
        "--scale",
        action="append",
        default=[],
        type=scale.parse_override,
        metavar="CURVE=N,N,...",
        help="the sizes of a scale_ curve, e.g. persons=10000,1000000 (default: the issue's, small ones with --quick)",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.scenarios) - set(ALL + scale.SCENARIO_NAMES))
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(ALL + scale.SCENARIO_NAMES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    stack = Stack()
    if args.stop:
        stack.stop()
        return 0
    chosen = [name for name in ALL + scale.SCENARIO_NAMES if name in args.scenarios] if args.scenarios else list(ALL)
    runs = args.runs or (1 if args.quick else 3)
    sizes = Sizes.for_mode(args.quick)
    scenarios = SCENARIOS | scale.ScaleCurves(scale.ScaleSizes.for_mode(args.quick, dict(args.scale))).scenarios()

    reused = stack.is_running()
    stack.ensure_running()
    if reused and args.restart:
        stack.restart_app()
    workdir = VAR / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    sampler = RssSampler(stack.programs).start()
    collected: dict[str, list[dict]] = {}
    notes: list[str] = []
    try:
        ctx = prepare(stack, sizes, workdir)
        description = machine.describe(stack.versions())
        for name in chosen:
            if name == "rss":
                continue
            for run in range(runs):
                print(f"\n== {name}, run {run + 1} of {runs}", flush=True)
                started = time.monotonic()
                collected.setdefault(name, []).append(scenarios[name](ctx, run))
                print(f"   ({time.monotonic() - started:.0f} s)", flush=True)
    finally:
        sampler.stop()
        if stack.started_here and not args.keep:
            stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    notes.append(
        "Load generators run on the same 2 cores as the stack: their CPU use is in each run "
        "(loadgen_cpu_percent, % of one core)."
    )
    document = results.build(
        collected,
        rss_mb=sampler.peaks_mb(),
        machine=description,
        options={
            "scenarios": chosen,
            "runs": runs,
            "quick": args.quick,
            "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        },
    )
    document["notes"] = notes
    if "scale" in document:
        stamp = document["timestamp"].replace(":", "").replace("-", "")
        for curve, path in zip(document["scale"], scale.plot(document["scale"], RESULTS_DIR, stamp), strict=True):
            document["scale"][curve]["plot"] = path.name
    json_path, md_path = results.write(document, RESULTS_DIR)
    print()
    print(results.markdown(document))
    print(f"results: {json_path}\n         {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
