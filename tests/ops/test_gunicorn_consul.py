"""Real Gunicorn with gunicorn_config.py registers itself in a Consul agent (the loopback double).

docs/contracts.md#operations: registered when ready with the advertised address and an HTTP check on
/health/ready; deregistered on SIGTERM; Consul down at start never holds Gunicorn up.
"""

import pytest

from devservers import free_port
from tests.conftest import process_env
from tests.consul_double import ConsulAgentDouble
from tests.ops.processes import GunicornProcess, http_get

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "3f1c9d2e-acl-token"


def consul_env(test_database_url: str, agent: ConsulAgentDouble, **extra: str) -> dict[str, str]:
    return process_env(
        test_database_url,
        CONSUL_ENABLED="true",
        CONSUL_HTTP_ADDR=agent.address,
        CONSUL_HTTP_TOKEN=TOKEN,
        CONSUL_CHECK_INTERVAL="300ms",
        CONSUL_CHECK_TIMEOUT="2s",
        CONSUL_RETRY_MAX_SECONDS="0.5",
        CONSUL_SERVICE_TAGS="bklog,web,canary",
        **extra,
    )


def test_registers_when_ready_check_passes_and_sigterm_deregisters(test_database_url):
    agent = ConsulAgentDouble(acl_token=TOKEN).start()
    web = GunicornProcess(consul_env(test_database_url, agent))
    try:
        web.start()
        service_id = agent.wait_for(lambda a: next(iter(a.services), None), what="registration")
        service = agent.services[service_id]
        assert service.name == "bklog-api"
        assert service_id.startswith("bklog-api-") and service_id.endswith(f"-{web.port}")
        assert (service.address, service.port) == ("127.0.0.1", web.port)
        assert service.tags == ["bklog", "web", "canary"]
        assert service.meta["version"]
        [check] = service.checks
        assert check.target == f"http://127.0.0.1:{web.port}/health/ready"
        assert (check.interval, check.timeout, check.deregister_after) == (0.3, 2.0, 60.0)
        # The agent runs the check against the real /health/ready: it passes.
        agent.wait_for(lambda a: a.services[service_id].checks[0].status == "passing", what="a passing check")
        [entry] = agent.wait_for(lambda a: a._health("bklog-api", passing_only=True), what="a passing entry")
        assert entry["Service"]["Port"] == web.port
        assert all(r.headers.get("x-consul-token") == TOKEN for r in agent.requests_to("PUT", "/v1/agent/service"))

        assert web.terminate() == 0
        assert agent.services == {}
        [deregister] = agent.requests_to("PUT", "/v1/agent/service/deregister/")
        assert (deregister.path, deregister.status) == (f"/v1/agent/service/deregister/{service_id}", 200)
    finally:
        web.stop()
        agent.stop()


def test_consul_down_at_start_never_holds_gunicorn_up(test_database_url):
    agent = ConsulAgentDouble(port=free_port(), acl_token=TOKEN)  # not started: nothing listens there
    web = GunicornProcess(consul_env(test_database_url, agent))
    try:
        web.start()  # answers /_health although the agent is down
        assert http_get(f"{web.url}/health")[0] == 200
        agent.start()
        service_id = agent.wait_for(lambda a: next(iter(a.services), None), timeout=30, what="late registration")
        agent.wait_for(lambda a: a.services[service_id].checks[0].status == "passing", what="a passing check")
        assert "consul registration failed; retrying" in web.tail(200)
        assert web.terminate() == 0
        assert agent.services == {}
    finally:
        web.stop()
        agent.stop()


def test_consul_disabled_registers_nothing(test_database_url):
    with ConsulAgentDouble() as agent:
        web = GunicornProcess(process_env(test_database_url, CONSUL_ENABLED="false", CONSUL_HTTP_ADDR=agent.address))
        try:
            web.start()
            assert web.terminate() == 0
        finally:
            web.stop()
        assert agent.requests == []
