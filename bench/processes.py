"""Peak RSS of every process of the stack, sampled in the background for the whole bench.

Each supervisord program's main process is named after the program; its descendants (Gunicorn
workers, Celery pool processes, PostgreSQL backends) `<program>/child-<n>` in pid order. The
kernel keeps each process's own peak (VmHWM), so sampling every second misses only processes
that lived less than that.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path


def read_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in kB; {} when the process is gone."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    except OSError:
        return {}
    return out


def children_by_parent() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        tree[int(fields[1])].append(int(stat.parent.name))
    return tree


def named_processes(programs: dict[str, int]) -> dict[str, int]:
    """Program name -> pid, plus `<program>/child-<n>` -> pid for every descendant."""
    tree = children_by_parent()
    out = {}
    for program, pid in programs.items():
        out[program] = pid
        if program == "supervisord":
            continue
        descendants, stack = [], list(tree.get(pid, []))
        while stack:
            child = stack.pop()
            descendants.append(child)
            stack.extend(tree.get(child, []))
        for n, child in enumerate(sorted(descendants), start=1):
            out[f"{program}/child-{n:02d}"] = child
    return out


def cpu_seconds(programs: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) used so far by each program: its main process with the children
    it has reaped, plus its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = defaultdict(float)
    for name, pid in named_processes(programs).items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        program = name.split("/")[0]
        used = int(fields[11]) + int(fields[12])
        if "/" not in name:
            used += int(fields[13]) + int(fields[14])
        out[program] += used / tick
    return dict(out)


class RssSampler:
    """Samples in a thread until stopped; `peaks_mb()` is name -> peak MB seen."""

    def __init__(self, programs: Callable[[], dict[str, int]], interval: float = 1.0, refresh_every: int = 10) -> None:
        self._programs = programs
        self._interval = interval
        self._refresh_every = refresh_every
        self._peaks_kb: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.sample(self._programs())

    def sample(self, programs: dict[str, int]) -> None:
        for name, pid in named_processes(programs).items():
            status = read_status(pid)
            peak = max(status.get("VmHWM", 0), status.get("VmRSS", 0))
            if peak > self._peaks_kb.get(name, 0):
                self._peaks_kb[name] = peak

    def peaks_mb(self) -> dict[str, float]:
        return {name: round(kb / 1024, 1) for name, kb in sorted(self._peaks_kb.items())}

    def _loop(self) -> None:
        programs: dict[str, int] = {}
        tick = 0
        while not self._stop.is_set():
            if tick % self._refresh_every == 0:
                programs = self._programs()
            self.sample(programs)
            tick += 1
            self._stop.wait(self._interval)
