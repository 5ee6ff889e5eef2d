"""The maximum sustained single-event capture rate, measured with wrk (Debian's `wrk`, written in C,
so the load costs the 2-core machine as little CPU as possible): closed loop, N keep-alive
connections, as fast as the server answers, for a fixed time.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
from pathlib import Path

_SCRIPT = r"""
-- Written by bench/wrk.py: POST one $pageview per request, distinct ids cycling over 1,000.
local token = "@TOKEN@"
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local body = '{"api_key":"' .. token .. '","event":"$pageview","distinct_id":"wrk-' .. (counter % 1000) ..
    '","properties":{"$current_url":"https://shop.example.com/products/' .. (counter % 97) ..
    '","$browser":"Chrome","$os":"Mac OS X","$lib":"web","$lib_version":"1.96.0","plan":"free"}}'
  return wrk.format(nil, "/e/", nil, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"status_errors":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


# The maximum rate is a closed loop: each connection sends its next request when the last is
# answered, so 32 connections can never pass 32 / latency, and every capture request waits up to
# CAPTURE_LINGER_MS for others to share its message (at a 10 ms linger, 32 / 12 ms = 2,700
# req/s whatever the server's CPU). Many more clients than that send at once in production; the
# maximum is the best of both, each in the results.
MAX_RATE_CONNECTIONS = (32, 128)


def available() -> bool:
    return shutil.which("wrk") is not None


def max_rate(url: str, token: str, workdir: Path, *, seconds: int, connections: int = 32) -> dict:
    """Run wrk; return requests/s counting only 2xx answers, latency percentiles and wrk's CPU use."""
    script = workdir / "wrk-capture.lua"
    script.write_text(_SCRIPT.replace("@TOKEN@", token))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=False,
        timeout=seconds + 60,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((ln for ln in completed.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (code {completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    duration = data["duration_us"] / 1e6
    errors = data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["timeouts"]
    ok = data["requests"] - data["status_errors"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "tool": "wrk",
        "connections": connections,
        "seconds": round(duration, 2),
        "requests": data["requests"],
        "ok": ok,
        "non_2xx": data["status_errors"],
        "errors": errors,
        "rps": round(ok / duration, 1),
        "p50_ms": round(data["p50_us"] / 1000, 2),
        "p99_ms": round(data["p99_us"] / 1000, 2),
        "max_ms": round(data["max_us"] / 1000, 2),
        "loadgen_cpu_percent": round(100 * cpu / duration, 1),
    }
