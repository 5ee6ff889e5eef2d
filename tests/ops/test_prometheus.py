"""A real Prometheus (Debian's `prometheus` 2.42) scrapes bklog's /metrics; promtool checks the
shipped alert rules and scrape configuration (docs/contracts.md#operations)."""

import json
import shutil
import subprocess
import tempfile
import urllib.parse
import uuid
from pathlib import Path

import orjson
import pytest
import yaml

import pipeline.metrics  # noqa: F401 - sets PROMETHEUS_MULTIPROC_DIR, which the web process inherits
from devservers import free_port
from tests.conftest import process_env
from tests.factories import wait_for_events
from tests.ops.processes import ROOT, GunicornProcess, http_get, http_post, wait_until

PROMETHEUS_DIR = ROOT / "support-files" / "prometheus"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="Debian's `prometheus` package is missing: run support-files/dev/install-system-deps.sh",
)


@needs_prometheus
def test_promtool_accepts_the_alert_rules():
    result = subprocess.run([PROMTOOL, "check", "rules", str(PROMETHEUS_DIR / "alerts.yml")],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {"BklogTargetDown", "BklogHighLatencyP95", "BklogHigh5xxRate", "BklogQueueBacklog", "BklogIngestionLag",
            "BklogPluginErrorRate", "BklogDatabaseConnections", "BklogDiskSpaceLow",
            "BklogCaptureMessagesRepublished"} <= names  # fmt: skip
    operations = (ROOT / "docs" / "operations.md").read_text()
    runbook = operations.split("### What to do for each alert")[1].split("\n## ")[0]
    assert {name for name in names if f"**{name}" not in runbook and f"{name}**" not in runbook} == set()
    backlog = next(r for g in rules["groups"] for r in g["rules"] if r["alert"] == "BklogQueueBacklog")
    assert "> 1000" in backlog["expr"]


def test_scrape_config_finds_the_web_tier_through_consul():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api = jobs["bklog-api"]
    assert api["metrics_path"] == "/metrics"
    assert api["consul_sd_configs"][0]["services"] == ["bklog-api"]
    assert {"source_labels": ["__meta_consul_health"], "regex": "passing", "action": "keep"} in api["relabel_configs"]
    assert jobs["bklog-worker"]["consul_sd_configs"][0]["services"] == ["bklog-worker"]
    assert config["rule_files"] == ["alerts.yml"]


@needs_prometheus
def test_promtool_accepts_the_scrape_config(tmp_path):
    """Debian builds Prometheus without Consul discovery ("Disable Consul SD until its Debian
    package is back in shape"), so promtool checks everything else of the file: the Consul
    blocks become static targets, the relabelling and rule files stay as shipped."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        job.pop("consul_sd_configs")
        job["static_configs"] = [{"targets": ["127.0.0.1:8000"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(PROMETHEUS_DIR / "alerts.yml", tmp_path / "alerts.yml")
    result = subprocess.run([PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


class PrometheusServer:
    def __init__(self, target: str):
        self.dir = Path(tempfile.mkdtemp(prefix="bklog-prometheus-"))
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
            "scrape_configs": [{"job_name": "bklog-api", "metrics_path": "/metrics",
                                "static_configs": [{"targets": [target]}]}],
        }  # fmt: skip
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = self.dir / "prometheus.log"
        self.process = None

    def start(self) -> "PrometheusServer":
        command = [
            PROMETHEUS,
            f"--config.file={self.dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: http_get(f"{self.api}/-/ready".replace("/api/v1", ""))[0] == 200, 60,
                   "ready Prometheus", lambda: self.log.read_text())  # fmt: skip
        return self

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def query(self, expression: str) -> list[dict]:
        status, body = http_get(f"{self.api}/query?query={urllib.parse.quote(expression)}")
        assert status == 200, body
        return json.loads(body)["data"]["result"]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


@needs_prometheus
@pytest.mark.django_db(transaction=True)
def test_real_prometheus_scrapes_metrics_and_sees_ingestion_counters_move(project, test_database_url, celery_worker):
    web = GunicornProcess(process_env(test_database_url, CONSUL_ENABLED="false")).start()
    prometheus = None
    try:
        prometheus = PrometheusServer(f"127.0.0.1:{web.port}").start()

        def scraped_value(expression: str):
            result = prometheus.query(expression)
            return float(result[0]["value"][1]) if result else None

        wait_until(lambda: scraped_value('up{job="bklog-api"}') == 1, 60, "successful scrape",
                   lambda: prometheus.log.read_text()[-3000:])  # fmt: skip
        before = scraped_value("bklog_events_ingested_total") or 0.0
        events = [{"event": "scraped", "distinct_id": "u", "uuid": str(uuid.uuid4())} for _ in range(12)]
        status, body = http_post(f"{web.url}/batch/", orjson.dumps({"api_key": project.api_token, "batch": events}))
        assert status == 200, (body, web.tail())
        assert len(wait_for_events(project.id, 12)) == 12
        moved = wait_until(lambda: (scraped_value("bklog_events_ingested_total") or 0) - before >= 12 or None, 60,
                           "ingestion counter moving in Prometheus")  # fmt: skip
        assert moved
        assert scraped_value("bklog_events_received_total") >= 12
        assert scraped_value('sum(bklog_http_requests_total{view="capture",status="200"})') >= 1
        assert scraped_value('bklog_queue_depth{queue="ingestion"}') is not None
        # The shipped rules load and are evaluated by the server.
        status, body = http_get(f"{prometheus.api}/rules")
        groups = {group["name"] for group in json.loads(body)["data"]["groups"]}
        assert {"bklog-availability", "bklog-ingestion", "bklog-resources"} <= groups
    finally:
        if prometheus is not None:
            prometheus.stop()
        web.stop()
