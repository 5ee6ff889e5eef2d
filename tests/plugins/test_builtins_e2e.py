"""The built-in plugins, end to end through the capture API and the real worker."""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from bklog_app.models import DeadLetter
from tests.factories import wait_for_events
from tests.plugins.conftest import event, logs, post_batch, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LONDON = {
    "city": {"geoname_id": 2643743, "names": {"en": "London"}},
    "continent": {"code": "EU", "names": {"en": "Europe"}},
    "country": {"iso_code": "GB", "names": {"en": "United Kingdom"}},
    "location": {"latitude": 51.5142, "longitude": -0.0931, "time_zone": "Europe/London"},
    "postal": {"code": "EC2V"},
    "subdivisions": [{"iso_code": "ENG", "names": {"en": "England"}}],
}


def write_city_database(path: Path) -> Path:
    """A real MaxMind DB (City layout) with one network, written with mmdb-writer."""
    writer = MMDBWriter(ip_version=4, database_type="GeoLite2-City", languages=["en"], description="bklog tests")
    writer.insert_network(IPSet(["81.2.69.0/24"]), LONDON)
    writer.to_db_file(str(path))
    return path


def test_geoip_adds_location_properties(client, project, celery_worker, install, tmp_path):
    database = write_city_database(tmp_path / "city.mmdb").read_bytes()
    attachment = {
        "file_name": "city.mmdb",
        "content_type": "application/octet-stream",
        "contents_base64": base64.b64encode(database).decode(),
    }
    install({"source_type": "builtin", "builtin": "geoip"}, config={"database": attachment})

    post_batch(
        client, project.api_token, [event("a", "u1", **{"$ip": "81.2.69.160"}), event("b", "u2", **{"$ip": "10.0.0.1"})]
    )
    stored = {e["event"]: e for e in wait_for_events(project.id, 2)}
    london = stored["a"]["properties"]
    assert london["$geoip_city_name"] == "London"
    assert london["$geoip_country_code"] == "GB"
    assert london["$geoip_country_name"] == "United Kingdom"
    assert london["$geoip_continent_code"] == "EU"
    assert london["$geoip_latitude"] == pytest.approx(51.5142)
    assert london["$geoip_time_zone"] == "Europe/London"
    assert london["$geoip_subdivision_1_code"] == "ENG"
    assert london["$set"]["$geoip_city_name"] == "London"
    assert london["$set_once"]["$initial_geoip_city_name"] == "London"
    assert not any(key.startswith("$geoip") for key in stored["b"]["properties"])


def test_meta_geoip_reads_geoip_database_path(settings, tmp_path):
    from pipeline.plugins.geoip import GeoIP

    settings.GEOIP_DATABASE_PATH = str(write_city_database(tmp_path / "city.mmdb"))
    assert GeoIP().locate("81.2.69.1")["city"]["names"]["en"] == "London"
    assert GeoIP().locate("192.0.2.1") is None
    assert GeoIP().locate("not an ip") is None


def test_property_filter_taxonomy_and_downsampling_in_one_chain(client, project, celery_worker, install):
    from pipeline.plugins.builtins.downsampling.plugin import keep

    install({"source_type": "builtin", "builtin": "property_filter"}, config={"properties": "email, phone"}, order=0)
    install(
        {"source_type": "builtin", "builtin": "taxonomy_standardiser"},
        config={"naming_convention": "snake_case"},
        order=1,
    )
    install({"source_type": "builtin", "builtin": "downsampling"}, config={"percentage": 50}, order=2)

    users = [f"user-{i}" for i in range(40)]
    kept = [u for u in users if keep(u, 0.5)]
    assert 0 < len(kept) < len(users)
    post_batch(
        client,
        project.api_token,
        [
            {
                **event("Signed Up", user, email="a@b.c", phone="123", plan="pro"),
                "$set": {"email": "a@b.c", "name": "A"},
            }
            for user in users
        ],
    )
    # A marker event from a kept user, sent after, proves the dropped ones are not merely late.
    post_batch(client, project.api_token, [event("$pageview", kept[0])])
    stored = wait_for_events(project.id, len(kept) + 1)
    assert sorted(e["distinct_id"] for e in stored if e["event"] != "$pageview") == sorted(kept)
    for row in stored:
        if row["event"] == "$pageview":
            continue
        assert row["event"] == "signed_up"
        assert "email" not in row["properties"] and "phone" not in row["properties"]
        assert row["properties"]["plan"] == "pro"
        assert row["properties"]["$set"] == {"name": "A"}


class _Webhook(BaseHTTPRequestHandler):
    received: list
    statuses: list

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = self.statuses.pop(0) if self.statuses else 200
        self.received.append({"status": status, "body": json.loads(body), "auth": self.headers.get("Authorization")})
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    handler = type("Handler", (_Webhook,), {"received": [], "statuses": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()
    server.server_close()


def test_webhook_forwarder_posts_batches_and_retries_server_errors(
    client, project, celery_worker, install, webhook, api_client
):
    handler, url = webhook
    handler.statuses.extend([503, 500])
    _, config = install(
        {"source_type": "builtin", "builtin": "webhook_forwarder"},
        config={"url": url, "auth_token": "tok", "export_events_buffer_seconds": 1},
    )
    sent = [event("a", "u1"), event("b", "u2")]
    post_batch(client, project.api_token, sent)
    wait_until(lambda: any(r["status"] == 200 for r in handler.received), timeout=30, message="a delivered batch")

    assert [r["status"] for r in handler.received] == [503, 500, 200]
    delivered = handler.received[-1]
    assert delivered["auth"] == "Bearer tok"
    assert sorted(e["uuid"] for e in delivered["body"]["batch"]) == sorted(e["uuid"] for e in sent)
    assert all(r["body"] == delivered["body"] for r in handler.received)  # the same batch each time
    assert len([e for e in logs(api_client, project.id, config["id"], type="WARN") if "retry" in e["message"]]) == 2
    assert not DeadLetter.objects.filter(project=project).exists()


def test_webhook_forwarder_does_not_retry_client_errors(client, project, celery_worker, install, webhook):
    handler, url = webhook
    handler.statuses.extend([400])
    install(
        {"source_type": "builtin", "builtin": "webhook_forwarder"},
        config={"url": url, "export_events_buffer_seconds": 1},
    )
    post_batch(client, project.api_token, [event("a")])
    letter = wait_until(
        lambda: DeadLetter.objects.filter(project=project, kind="export_events").first(), message="the dead letter"
    )
    assert "refused the batch with 400" in letter.error
    assert len(handler.received) == 1
