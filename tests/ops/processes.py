"""Real Gunicorn and supervisord processes for the operations tests, run as operators run them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from devservers import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with NO_PROXY.open(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def http_post(url: str, body: bytes, content_type: str = "application/json", timeout: float = 10.0):
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with NO_PROXY.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_until(predicate, timeout: float, what: str, on_fail=lambda: ""):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
        except Exception as exc:  # still starting
            last, result = exc, None
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout}s (last error: {last})\n{on_fail()}")


class GunicornProcess:
    """`gunicorn -c gunicorn_config.py bklog_app.wsgi:application`, as supervisord starts it."""

    def __init__(self, env: dict[str, str], port: int | None = None):
        self.port = port or free_port()
        self.env = {"GUNICORN_BIND": f"127.0.0.1:{self.port}", "GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "2",
                    **env}  # fmt: skip
        self.log = Path(tempfile.mkstemp(prefix="gunicorn-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GunicornProcess:
        command = [str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn_config.py"), "bklog_app.wsgi:application"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_until(lambda: self._alive() and http_get(f"{self.url}/_health", 1)[0] == 200, 60, "answer on /_health",
                   self.tail)  # fmt: skip
        return self

    def _alive(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"gunicorn exited with {self.process.returncode}:\n{self.tail()}")
        return True

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def terminate(self, timeout: float = 40) -> int:
        """SIGTERM to the master, as supervisord and Kubernetes stop it; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            try:
                self.terminate(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
