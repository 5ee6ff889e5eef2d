"""The deployment files parse, and carry what an operator relies on (issue 6 points 6 and 7), in
cluster mode too (docs/operations.md#the-deployment-files-in-cluster-mode)."""

import re
import shutil
from pathlib import Path

import hcl2
import pytest
import yaml
from clickhouse_driver import Client

from devservers import ClickHouseServer
from pipeline.queues import ROLE_QUEUES, Queue
from pipeline.redis import sentinel_addresses
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


def test_nomad_job_has_web_workers_per_role_and_two_beats_apart(nomad_job):
    groups = _blocks(nomad_job, "group")
    assert set(groups) == {
        "web", "worker-ingestion", "worker-ingestion-overflow", "worker-async", "worker-scheduler", "beat",
    }  # fmt: skip
    assert nomad_job["update"][0]["auto_revert"] is True
    assert groups["beat"]["count"] == 2  # one sends (the lease), the other stands by
    assert groups["beat"]["spread"][0]["attribute"] == "${node.unique.id}"
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
    beat = deployments["bklog-beat"]["spec"]
    assert beat["replicas"] == 2  # one sends (the lease), the other stands by on another node
    assert beat["strategy"]["type"] == "RollingUpdate"
    [apart] = beat["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert apart["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert apart["podAffinityTerm"]["labelSelector"]["matchLabels"] == beat["selector"]["matchLabels"]
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


# -- cluster mode ------------------------------------------------------------------------------

CLUSTER_DIR = SUPPORT / "cluster"
COMMENTED_SETTING = re.compile(r"^(\s*)#([A-Z][A-Z0-9_]+: .*)$")


def _cluster_form(path: Path) -> dict:
    """A YAML manifest as an operator turns it to cluster mode: the commented-out settings
    (`#KEY: value`) uncommented, replacing the single-node lines of the same keys."""
    lines = path.read_text().splitlines()
    commented = {m.group(2).split(":")[0] for line in lines if (m := COMMENTED_SETTING.match(line))}
    kept = []
    for line in lines:
        if m := COMMENTED_SETTING.match(line):
            kept.append(m.group(1) + m.group(2))
        elif line.strip().split(":")[0] not in commented:
            kept.append(line)
    return yaml.safe_load("\n".join(kept))


def _compose_cluster() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.cluster.yml").read_text())


def _nomad_cluster_settings() -> dict[str, str]:
    text = (SUPPORT / "nomad" / "bklog.nomad.hcl").read_text()
    return {key: value.strip("'") for key, value in re.findall(r"consul kv put bklog/config/(\w+) (\S+)", text)}


def _k8s_cluster_settings() -> dict[str, str]:
    configmap = _cluster_form(SUPPORT / "k8s" / "configmap.yaml")
    secret = _cluster_form(SUPPORT / "k8s" / "secret.example.yaml")
    return {**configmap["data"], **secret["stringData"]}


def _cluster_xml() -> str:
    return (CLUSTER_DIR / "clickhouse" / "cluster.xml").read_text()


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param(lambda: _compose_cluster()["x-app-node"]["environment"], id="docker-compose.cluster.yml"),
        pytest.param(_k8s_cluster_settings, id="k8s configmap+secret"),
        pytest.param(_nomad_cluster_settings, id="nomad consul kv"),
    ],
)
def test_every_cluster_manifest_sets_sentinels_and_every_clickhouse_server(settings):
    env = settings()
    assert env["CLICKHOUSE_CLUSTER"] == "bklog"
    for url in ("REDIS_URL", "CELERY_BROKER_URL"):
        assert env[url].startswith("sentinel://"), url
        sentinels, db = sentinel_addresses(env[url])
        assert db == 0, url
        assert len(sentinels) == 3 and all(port == 26379 for _host, port in sentinels), url
    assert env["REDIS_SENTINEL_MASTER"] == "bklog"
    assert int(env["REDIS_WAIT_REPLICAS"]) >= 1
    alt_hosts = env["CLICKHOUSE_ALT_HOSTS"].split(",")
    assert len(alt_hosts) == 3 and all(re.fullmatch(r"[\w.-]+:9000", host) for host in alt_hosts)
    assert env["CLICKHOUSE_HOST"] not in {host.split(":")[0] for host in alt_hosts}


def test_single_node_manifests_stay_single_node():
    configmap = yaml.safe_load((SUPPORT / "k8s" / "configmap.yaml").read_text())["data"]
    secret = yaml.safe_load((SUPPORT / "k8s" / "secret.example.yaml").read_text())["stringData"]
    assert "CLICKHOUSE_CLUSTER" not in configmap and configmap["CLICKHOUSE_HOST"] == "clickhouse"
    assert secret["REDIS_URL"] == "redis://redis:6379/0"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert "CLICKHOUSE_CLUSTER" not in compose["x-bklog"]["environment"]


def test_compose_cluster_names_its_servers_as_the_clickhouse_config_does():
    """The app nodes list the servers shard by shard, as remote_servers does; every file the
    override mounts exists; each ClickHouse server mounts its own macros; the images are the
    official ones; the single-node processes are off."""
    compose = _compose_cluster()
    services = compose["services"]
    base = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    env = compose["x-app-node"]["environment"]
    listed = [env["CLICKHOUSE_HOST"]] + [host.split(":")[0] for host in env["CLICKHOUSE_ALT_HOSTS"].split(",")]
    assert listed == re.findall(r"<replica><host>([\w-]+)</host>", _cluster_xml())
    assert f"<{env['CLICKHOUSE_CLUSTER']}>" in _cluster_xml()
    for name in listed:
        service = services[name]
        assert service["image"].startswith("clickhouse/clickhouse-server:")
        mounts = {
            volume.split(":")[1]: volume.split(":")[0] for volume in service["volumes"] if volume.startswith("./")
        }
        assert (
            mounts["/etc/clickhouse-server/config.d/node.xml"] == f"./support-files/cluster/clickhouse/{name[11:]}.xml"
        )
    for name, service in services.items():
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert (ROOT / volume.split(":")[0]).is_file(), (name, volume)
        for needed in service.get("depends_on", []):
            assert needed in services or needed in base, (name, needed)
    assert services["zookeeper"]["image"].startswith("zookeeper:")
    assert all(services[f"redis-sentinel-{i}"]["image"].startswith("redis:") for i in (1, 2, 3))
    assert {services[node]["environment"]["BKLOG_NODE_NAME"] for node in ("app-1", "app-2")} == {"app-1", "app-2"}
    assert all(services[node]["command"] == ["all"] for node in ("app-1", "app-2"))  # web, workers, beat each
    for single in ("web", "worker-ingestion", "worker-ingestion-overflow", "worker-async", "worker-scheduler", "beat"):
        assert services[single]["profiles"] == ["single-node"], single
    sentinel = (CLUSTER_DIR / "redis" / "sentinel.conf").read_text()
    assert f"sentinel monitor {env['REDIS_SENTINEL_MASTER']} redis 6379 2" in sentinel


@pytest.mark.parametrize("node", ["s1r1", "s1r2", "s2r1", "s2r2"])
def test_clickhouse_reads_the_cluster_config_files(tmp_path, node):
    """ClickHouse 18.16 itself reads support-files/cluster/clickhouse/ (the host names pointed at
    loopback, where no Docker network resolves them): the cluster's 2 x 2 layout and its macros."""

    class ComposeClickHouse(ClickHouseServer):
        def _prepare(self) -> None:
            super()._prepare()
            config_d = self.data_dir / "config.d"
            config_d.mkdir(exist_ok=True)
            (config_d / "cluster.xml").write_text(
                re.sub(r"<host>[\w-]+</host>", "<host>127.0.0.1</host>", _cluster_xml())
            )
            shutil.copy(CLUSTER_DIR / "clickhouse" / f"{node}.xml", config_d / "node.xml")

    server = ComposeClickHouse(tmp_path / "clickhouse")
    server.start()
    try:
        client = Client("127.0.0.1", port=server.port)
        layout = client.execute("SELECT shard_num, replica_num FROM system.clusters WHERE cluster = 'bklog'")
        macros = dict(client.execute("SELECT macro, substitution FROM system.macros"))
        client.disconnect()
    finally:
        server.stop()
    assert sorted(layout) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert macros == {"cluster": "bklog", "shard": f"0{node[1]}", "replica": node}
