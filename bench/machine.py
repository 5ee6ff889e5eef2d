"""What the figures were measured on: cores, memory, CPU, load, versions, the commit."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "Django",
    "celery",
    "kombu",
    "celery-batches",
    "gunicorn",
    "redis",
    "clickhouse-driver",
    "psycopg",
    "orjson",
)


def describe(stack_versions: dict[str, str] | None = None) -> dict:
    meminfo = _meminfo_kb()
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(meminfo.get("MemTotal", 0) / 1024 / 1024, 1),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        # Share of time some runnable task waited for a CPU (Linux PSI): other work on the machine.
        "cpu_pressure_at_start": _pressure("cpu"),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "servers": stack_versions or {},
        "wrk": _wrk_version(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": bool(_git("status", "--porcelain")),
    }


def _meminfo_kb() -> dict[str, int]:
    out = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def _pressure(resource: str) -> dict[str, float] | None:
    try:
        line = Path(f"/proc/pressure/{resource}").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    fields = dict(part.split("=") for part in line.split()[1:])
    return {key: float(fields[key]) for key in ("avg10", "avg60", "avg300") if key in fields}


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _wrk_version() -> str | None:
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return None
    return out.splitlines()[0].strip() if out else None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None
