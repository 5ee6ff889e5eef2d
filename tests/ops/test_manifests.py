"""The deployment files parse, and carry what an operator relies on (issue 6 points 6 and 7)."""

from pathlib import Path

import hcl2
import pytest
import yaml

from pipeline.queues import ROLE_QUEUES, Queue
from tests.ops.processes import ROOT

SUPPORT = ROOT / "support-files"


def _unquote(value):
    """python-hcl2 keeps HCL's quotes on strings and block labels; take them off."""
    if isinstance(value, str):
        return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    if isinstance(value, list):
        return [_unquote(item) for item in value]
    if isinstance(value, dict):
        return {_unquote(key): _unquote(item) for key, item in value.items() if key != "__is_block__"}
    return value


def _blocks(parent: dict, kind: str) -> dict:
    """Labelled blocks of one kind (`group "web" {...}`) as {label: body}."""
    return {label: body for block in parent.get(kind, []) for label, body in block.items()}


@pytest.fixture(scope="module")
def nomad_job() -> dict:
    with open(SUPPORT / "nomad" / "bklog.nomad.hcl") as handle:
        document = _unquote(hcl2.load(handle))
    return _blocks(document, "job")["bklog"]


def test_nomad_job_has_web_workers_per_role_and_one_beat(nomad_job):
    groups = _blocks(nomad_job, "group")
    assert set(groups) == {
        "web", "worker-ingestion", "worker-ingestion-overflow", "worker-async", "worker-scheduler", "beat",
    }  # fmt: skip
    assert nomad_job["update"][0]["auto_revert"] is True
    assert groups["beat"]["count"] == 1
    for name, group in groups.items():
        assert group["restart"][0]["mode"] == "delay", name
        for task_name, task in _blocks(group, "task").items():
            assert task["resources"][0]["cpu"] > 0 and task["resources"][0]["memory"] > 0, (name, task_name)
    for role in ("ingestion", "ingestion_overflow", "async", "scheduler"):
        [task] = _blocks(groups[f"worker-{role.replace('_', '-')}"], "task").values()
        assert task["config"][0]["args"] == ["worker", role]
        assert role in ROLE_QUEUES
        assert task["kill_timeout"] == "120s"  # longer than a task's soft limit


def test_nomad_web_group_has_consul_service_checks_and_scaling(nomad_job):
    web = _blocks(nomad_job, "group")["web"]
    [service] = web["service"]
    assert service["name"] == "bklog-api"
    paths = {check["path"] for check in service["check"]}
    assert paths == {"/health/ready", "/_health"}
    [scaling] = web["scaling"]
    assert scaling["enabled"] is True and scaling["min"] >= 2 and scaling["max"] > scaling["min"]
    tasks = _blocks(web, "task")
    assert tasks["migrate"]["lifecycle"][0]["hook"] == "prestart"
    assert tasks["web"]["env"][0]["CONSUL_ENABLED"] == "false"  # Nomad registers the service itself


def _k8s_documents() -> list[dict]:
    documents = []
    for path in sorted((SUPPORT / "k8s").glob("*.yaml")):
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def test_k8s_manifests_have_essential_fields():
    documents = _k8s_documents()
    by_kind: dict[str, dict[str, dict]] = {}
    for document in documents:
        assert {"apiVersion", "kind", "metadata"} <= document.keys()
        by_kind.setdefault(document["kind"], {})[document["metadata"]["name"]] = document
    deployments = by_kind["Deployment"]
    assert set(deployments) == {"bklog-web", "bklog-worker-ingestion", "bklog-worker-ingestion-overflow",
                                "bklog-worker-async", "bklog-worker-scheduler", "bklog-beat"}  # fmt: skip
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items(), name
        for container in spec["template"]["spec"]["containers"]:
            assert container["resources"]["requests"] and container["resources"]["limits"], name
            assert {"configMapRef": {"name": "bklog-config"}} in container["envFrom"], name
    web = deployments["bklog-web"]["spec"]["template"]["spec"]["containers"][0]
    assert web["livenessProbe"]["httpGet"]["path"] == "/_health"
    assert web["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert deployments["bklog-beat"]["spec"]["replicas"] == 1
    assert deployments["bklog-beat"]["spec"]["strategy"]["type"] == "Recreate"
    for role in ("ingestion", "ingestion_overflow", "async", "scheduler"):
        [worker] = deployments[f"bklog-worker-{role.replace('_', '-')}"]["spec"]["template"]["spec"]["containers"]
        assert worker["args"] == ["worker", role]
    assert by_kind["Service"]["bklog-web"]["spec"]["ports"][0]["targetPort"] == "http"
    assert by_kind["HorizontalPodAutoscaler"]["bklog-web"]["spec"]["scaleTargetRef"]["name"] == "bklog-web"
    assert by_kind["Ingress"]["bklog"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == (
        "bklog-web"
    )
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL"} <= by_kind["Secret"]["bklog-secrets"]["stringData"].keys()
    assert "CLICKHOUSE_HOST" in by_kind["ConfigMap"]["bklog-config"]["data"]


def test_k8s_network_policies_fence_web_and_workers():
    policies = {d["metadata"]["name"]: d for d in _k8s_documents() if d["kind"] == "NetworkPolicy"}
    web = policies["bklog-web"]["spec"]
    assert web["policyTypes"] == ["Ingress"]
    sources = [peer["namespaceSelector"]["matchLabels"] for rule in web["ingress"] for peer in rule["from"]]
    assert {"kubernetes.io/metadata.name": "ingress-nginx"} in sources
    workers = policies["bklog-workers"]["spec"]
    assert "Egress" in workers["policyTypes"]
    destinations = {
        peer["podSelector"]["matchLabels"].get("app.kubernetes.io/name")
        for rule in workers["egress"]
        for peer in rule["to"]
    }
    assert destinations - {None} == {"redis", "clickhouse", "postgresql"}


def test_docker_compose_runs_every_role_and_the_stores():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"web", "worker-ingestion", "worker-async", "worker-scheduler", "beat", "redis", "clickhouse",
            "postgres", "migrate"} <= services.keys()  # fmt: skip
    assert services["web"]["command"] == ["web"]
    assert services["worker-ingestion"]["command"] == ["worker", "ingestion"]
    assert services["worker-ingestion-overflow"]["command"] == ["worker", "ingestion_overflow"]
    assert services["web"]["environment"]["DATABASE_URL"].startswith("postgres://")
    assert services["beat"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_app_descriptor_matches_the_queues_and_version():
    from django.conf import settings

    app = yaml.safe_load((ROOT / "app.yml").read_text())
    assert (app["app_code"], app["app_version"], app["is_use_celery"]) == ("bklog", settings.VERSION, True)
    declared = {queue.value for queue in Queue}
    consumed = set()
    for name, process in app["processes"].items():
        assert process["resources"]["cpu"] and process["resources"]["memory"], name
        if name.startswith("worker-"):
            role = process["command"].split()[1]
            assert set(process["queues"]) == {queue.value for queue in ROLE_QUEUES[role]}, name
            assert process["concurrency"] >= 1
            consumed |= set(process["queues"])
    assert consumed == declared  # every queue has a consumer


def test_dockerfile_is_hadolint_clean():
    import subprocess
    import sys

    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "HEALTHCHECK" in dockerfile and "/_health" in dockerfile
    assert "USER 10001" in dockerfile
    assert dockerfile.count("FROM ") >= 2  # multi-stage
