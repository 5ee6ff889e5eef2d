"""The browser tier's servers and its way of running a client.

bklog runs as it is deployed (real Gunicorn, the session's Celery worker); the customer's web
pages come from a second origin (a small loopback HTTP server on another port), so the SDKs'
cross-origin requests meet bklog's CORS answers for real. Each client scenario is a Node script
in drivers/ (puppeteer-core driving Debian's Chromium, or posthog-node) that prints one JSON
document; a test module runs its script once and asserts on that document and on what ClickHouse
and the database stored.

The Node packages come from package-lock.json (`make browser-deps`). Objects a scenario needs
are committed to the test database by module fixtures (the browser and Gunicorn see only
committed rows), and whatever a test reads from the database is read there too: the tests are
transactional (so the session sets the test database up), and the first one's flush empties it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from tests.conftest import ROOT, process_env
from tests.ops.processes import GunicornProcess

HERE = Path(__file__).resolve().parent
NODE_MODULES = HERE / "node_modules"
DRIVERS = HERE / "drivers"
PAGES = HERE / "pages"
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM = Path(os.environ.get("BKLOG_CHROMIUM", "/usr/bin/chromium"))  # as drivers/chromium.mjs
SCENARIO_TIMEOUT = 240


def _needs_installing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (NODE_MODULES / "puppeteer-core").is_dir() or not (HERE / "build" / "analytics.js").is_file():
        return f"{NODE_MODULES} is not installed: run `make browser-deps`"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing: run `make system-deps`"
    return None


@pytest.fixture(scope="session")
def browser_tier_ready() -> None:
    missing = _needs_installing()
    if missing:
        pytest.fail(f"the browser tier cannot run: {missing}")


@pytest.fixture(scope="session")
def bklog(browser_tier_ready, test_database_url, celery_worker) -> Iterator[GunicornProcess]:
    """bklog's web process under Gunicorn, with the session's worker behind it."""
    server = GunicornProcess(process_env(test_database_url, CONSUL_ENABLED="false")).start()
    yield server
    server.stop()


def _page_routes() -> dict[str, tuple[Path, str]]:
    """URL path -> (file, content type) for the customer's site: its pages and the SDK builds."""
    routes = {
        "/segment.html": (PAGES / "segment.html", "text/html; charset=utf-8"),
        "/vendor/analytics.js": (HERE / "build" / "analytics.js", "text/javascript"),
    }
    for bundle in (NODE_MODULES / "posthog-js" / "dist").glob("*.js"):
        routes[f"/vendor/posthog-js/{bundle.name}"] = (bundle, "text/javascript")
        routes[f"/posthog/{bundle.name}.html"] = (PAGES / "posthog.html", "text/html; charset=utf-8")
    return routes


class _PageHandler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[Path, str]] = {}

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in self.routes:
            self.send_error(404)
            return
        file, content_type = self.routes[path]
        body = file.read_bytes()
        if path.startswith("/posthog/"):
            body = body.replace(b"{{bundle}}", path.removeprefix("/posthog/").removesuffix(".html").encode())
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture(scope="session")
def customer_site(browser_tier_ready) -> Iterator[str]:
    """The second origin: http://127.0.0.1:<another port>, serving the test pages and SDK builds."""
    handler = type("PageHandler", (_PageHandler,), {"routes": _page_routes()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="customer-site", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run_scenario(name: str, scenario_input: dict, **env: str) -> dict:
    """Run drivers/<name>.mjs with its input; its JSON output, or an error with what it printed."""
    result = subprocess.run(
        ["node", str(DRIVERS / f"{name}.mjs"), orjson.dumps(scenario_input).decode()],
        cwd=HERE,
        env={**os.environ, **env},
        capture_output=True,
        timeout=SCENARIO_TIMEOUT,
    )
    try:
        output = orjson.loads(result.stdout)
    except orjson.JSONDecodeError:
        output = {"fatal": result.stdout.decode(errors="replace")}
    if result.returncode != 0 or "fatal" in output:
        raise AssertionError(
            f"{name}.mjs failed ({result.returncode}): {output.get('fatal')}\n{result.stderr.decode()}"
        )
    return output


@pytest.fixture(scope="module")
def committed(django_db_setup, django_db_blocker) -> Callable:
    """A context in which a module fixture or test may use the test database (autocommit)."""

    @contextmanager
    def unblocked():
        with django_db_blocker.unblock():
            yield

    return unblocked


@pytest.fixture(scope="module")
def organization(committed):
    """An organization of this module's own; deleting it at the end takes its projects along."""
    from bklog_app.models import Organization

    with committed():
        org = Organization.objects.create(name=f"browser-{uuid.uuid4().hex[:8]}")
    yield org
    with committed():
        org.delete()


def summary(requests: list[dict]) -> str:
    """One line per request a client made: what it sent and what it got."""
    return "\n".join(
        f"{r['method']} {r['url']} ({r.get('type')}, body {r.get('body_kind')})"
        f" -> {r['status']} {r.get('failure') or ''} {r.get('response_body') or ''}".rstrip()
        for r in requests
    )


def wait_for_event_names(project_id: int, names: set[str], timeout: float = 45.0) -> list[dict]:
    """The project's stored events once each of `names` is among them, or whatever is stored
    when `timeout` seconds have passed (the test's assertions then say what is missing)."""
    from pipeline.storage.events import list_events

    deadline = time.monotonic() + timeout
    while True:
        rows = list_events(project_id, limit=1000)
        if names <= {row["event"] for row in rows} or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)
