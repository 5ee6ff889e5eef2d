"""The Consul registration pieces on their own: the agent double answers like an agent, the
service definition never advertises 0.0.0.0, and the registrar keeps trying in the background."""

import json
from types import SimpleNamespace

import consul
import pytest

from bklog_app.consul_registration import ConsulRegistrar, advertised_address, consul_client, service_definition
from devservers import free_port
from tests.consul_double import AgentError, ConsulAgentDouble, parse_go_duration


def settings_for(**overrides) -> SimpleNamespace:
    values = {
        "CONSUL_SERVICE_NAME": "bklog-api", "CONSUL_SERVICE_ADDRESS": "", "CONSUL_SERVICE_TAGS": ["bklog"],
        "CONSUL_CHECK_INTERVAL": "10s", "CONSUL_CHECK_TIMEOUT": "5s", "CONSUL_DEREGISTER_CRITICAL_AFTER": "10m",
        "VERSION": "1.2.3", "CONSUL_HTTP_ADDR": "127.0.0.1:8500", "CONSUL_HTTP_SSL": False,
        "CONSUL_HTTP_SSL_VERIFY": True, "CONSUL_CACERT": "", "CONSUL_CLIENT_CERT": "", "CONSUL_CLIENT_KEY": "",
        "CONSUL_HTTP_TOKEN": "", "CONSUL_TIMEOUT_SECONDS": 3.0,
    }  # fmt: skip
    return SimpleNamespace(**{**values, **overrides})


@pytest.fixture
def agent():
    with ConsulAgentDouble(acl_token="secret") as double:
        yield double


ACL_TOKEN = "secret"


def client_for(agent: ConsulAgentDouble, token: str | None = ACL_TOKEN) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=agent.port, token=token)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"Port": 80}, "Missing service name"),
        ({"Name": "web", "Address": "0.0.0.0"}, "Invalid service address"),
        ({"Name": "web", "Check": {"HTTP": "http://127.0.0.1/"}}, "Interval must be > 0"),
        ({"Name": "web", "Check": {"Interval": "10s"}}, "Check type is not valid"),
        ({"Name": "web", "Check": {"HTTP": "http://127.0.0.1/", "Interval": "ten"}}, 'invalid duration "ten"'),
        ({"Name": "web", "Meta": {"consul-x": "1"}}, "reserved for internal use"),
        ({"Name": "web", "Port": 70000}, "invalid port"),
    ],
)
def test_double_refuses_what_an_agent_refuses(agent, body, reason):
    try:
        agent.handle("PUT", "/v1/agent/service/register", {}, {"x-consul-token": "secret"}, json.dumps(body).encode())
    except AgentError as error:
        assert (error.status, reason in error.reason) == (400, True), error.reason
    else:
        pytest.fail(f"the double accepted {body}")


def test_double_speaks_the_agent_api_to_py_consul(agent):
    client = client_for(agent)
    check = consul.Check.http("http://127.0.0.1:1/health/ready", interval="1s", deregister="1m")
    assert client.agent.service.register("web", service_id="web-1", address="127.0.0.1", port=8000, check=check)
    assert client.agent.services()["web-1"]["Port"] == 8000
    _, nodes = client.health.service("web")
    assert nodes[0]["Checks"][1]["Status"] == "critical"  # a new check is critical until it passes
    assert client.agent.service.deregister("web-2") is False  # 404: an id the agent does not know
    assert client.agent.service.deregister("web-1")
    assert client.agent.services() == {}
    with pytest.raises(consul.ACLPermissionDenied):
        client_for(agent, token="wrong").agent.services()


def test_double_deregisters_a_service_critical_for_too_long(agent):
    client = client_for(agent)
    dead_port = free_port()
    check = consul.Check.http(f"http://127.0.0.1:{dead_port}/", interval="100ms", timeout="1s", deregister="300ms")
    client.agent.service.register("web", service_id="web-1", port=dead_port, check=check)
    agent.wait_for(lambda a: not a.services, what="deregistration of a critical service")


def test_go_durations():
    assert parse_go_duration("1m30s", "x") == 90
    assert parse_go_duration("250ms", "x") == 0.25
    assert parse_go_duration(2_000_000_000, "x") == 2


def test_advertised_address_is_never_the_any_address():
    assert advertised_address("127.0.0.1") == "127.0.0.1"
    assert advertised_address("10.1.2.3") == "10.1.2.3"
    for any_address in ("0.0.0.0", "::", "[::]"):
        try:
            chosen = advertised_address(any_address)
        except RuntimeError as error:  # a host with no routable address: the error says what to set
            assert "CONSUL_SERVICE_ADDRESS" in str(error)
        else:
            assert chosen not in ("0.0.0.0", "::") and not chosen.startswith("127.")


def test_service_definition_from_settings():
    service = service_definition("0.0.0.0", 8000, settings_for(CONSUL_SERVICE_ADDRESS="10.0.0.7"))
    assert (service.address, service.port, service.meta["version"]) == ("10.0.0.7", 8000, "1.2.3")
    assert service.check["http"] == "http://10.0.0.7:8000/health/ready"
    assert service.check["DeregisterCriticalServiceAfter"] == "10m"
    assert service.service_id.startswith("bklog-api-") and service.service_id.endswith("-8000")


def test_client_takes_address_token_and_tls_from_settings():
    client = consul_client(settings_for(CONSUL_HTTP_ADDR="https://consul.internal:8501", CONSUL_HTTP_TOKEN="t",
                                        CONSUL_CACERT="/etc/consul/ca.pem", CONSUL_CLIENT_CERT="/c.pem",
                                        CONSUL_CLIENT_KEY="/k.pem"))  # fmt: skip
    assert client.http.base_uri == "https://consul.internal:8501"
    assert client.http.verify == "/etc/consul/ca.pem"
    assert client.http.cert == ("/c.pem", "/k.pem")
    assert client.token == "t"


def test_registrar_retries_in_the_background_until_the_agent_answers():
    agent = ConsulAgentDouble(port=free_port())
    service = service_definition("127.0.0.1", free_port(), settings_for())
    registrar = ConsulRegistrar(service, consul.Consul(host="127.0.0.1", port=agent.port), retry_max_seconds=0.2)
    registrar.start()  # returns at once although nothing listens yet
    try:
        assert not registrar.registered.wait(0.5)
        agent.start()
        assert registrar.registered.wait(10)
        assert service.service_id in agent.services
        registrar.stop()
        assert agent.services == {}
    finally:
        agent.stop()
