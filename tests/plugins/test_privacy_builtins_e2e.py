"""The privacy built-ins (bot filter, PII hashing, URL masking, user-agent parser) on events the
real posthog SDK sends through a live server and a real worker."""

import hashlib
import hmac
from types import SimpleNamespace

import pytest
import requests
from posthog import Posthog

from pipeline.plugins.builtins.pii_hashing import plugin as pii_hashing
from pipeline.plugins.builtins.url_masking.plugin import mask_url
from tests.factories import assert_no_more_events, make_user_with_key

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Mobile/15E148 Safari/604.1"
)
WINDOWS_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
HEADLESS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36"
)


@pytest.fixture
def sdk(live_server, project):
    client = Posthog(project.api_token, host=live_server.url, gzip=True, flush_at=50, flush_interval=0.2)
    yield client
    client.shutdown()


def by_event(project_id: int, count: int) -> dict[str, dict]:
    return {row["event"]: row["properties"] for row in assert_no_more_events(project_id, count)}


def test_bot_filter_drops_bots_and_keeps_server_sdk_events(project, celery_worker, install, sdk):
    install({"source_type": "builtin", "builtin": "bot_filter"}, config={"extra_patterns": "uptime-probe"})
    sdk.capture("from_server", distinct_id="u1", properties={"plan": "pro"})  # no user agent: a server SDK
    sdk.capture("from_iphone", distinct_id="u1", properties={"$raw_user_agent": IPHONE})
    sdk.capture("from_chrome", distinct_id="u1", properties={"$useragent": WINDOWS_CHROME})
    sdk.capture("from_googlebot", distinct_id="u2", properties={"$raw_user_agent": GOOGLEBOT})
    sdk.capture("from_headless", distinct_id="u2", properties={"$useragent": HEADLESS})
    sdk.capture("from_probe", distinct_id="u2", properties={"$raw_user_agent": "Uptime-Probe/1.0"})
    sdk.flush()
    assert set(by_event(project.id, 3)) == {"from_server", "from_iphone", "from_chrome"}


def test_pii_hashing_hashes_the_listed_properties_with_the_salt(live_server, project, celery_worker, install, sdk):
    install({"source_type": "builtin", "builtin": "pii_hashing"}, config={"properties": "email,phone", "salt": "s3"})
    sdk.capture("signed_up", distinct_id="u1", properties={"email": "a@b.c", "phone": 123, "plan": "pro"})
    sdk.set(distinct_id="u1", properties={"email": "a@b.c", "name": "Ann"})
    sdk.flush()
    stored = by_event(project.id, 2)

    def digest(text: str) -> str:
        return hmac.new(b"s3", text.encode(), hashlib.sha256).hexdigest()

    assert stored["signed_up"]["email"] == digest("a@b.c")
    assert stored["signed_up"]["phone"] == digest("123")
    assert stored["signed_up"]["plan"] == "pro"
    assert stored["$set"]["$set"] == {"email": digest("a@b.c"), "name": "Ann"}
    _, key = make_user_with_key(project.organization)
    persons = requests.get(
        f"{live_server.url}/api/projects/{project.id}/persons/",
        params={"distinct_id": "u1"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    ).json()["results"]
    assert persons[0]["properties"]["email"] == digest("a@b.c")


def test_url_masking_masks_parameters_in_every_url_property(project, celery_worker, install, sdk):
    install({"source_type": "builtin", "builtin": "url_masking"}, config={"parameters": "token,Email", "mode": "mask"})
    sdk.capture(
        "$pageview",
        distinct_id="u1",
        properties={
            "$current_url": "https://shop.example/a?token=abc&page=2#top",
            "$referrer": "https://ref.example/?email=a%40b.c&utm_source=x",
            "$pathname": "/a",
            "$set_once": {"$initial_current_url": "https://shop.example/?TOKEN=t1"},
            "other_url": "https://shop.example/?token=kept",
        },
    )
    sdk.flush()
    stored = by_event(project.id, 1)["$pageview"]
    assert stored["$current_url"] == "https://shop.example/a?token=[masked]&page=2#top"
    assert stored["$referrer"] == "https://ref.example/?email=[masked]&utm_source=x"
    assert stored["$pathname"] == "/a"
    assert stored["$set_once"]["$initial_current_url"] == "https://shop.example/?TOKEN=[masked]"
    assert stored["other_url"] == "https://shop.example/?token=kept"


def test_url_masking_strips_every_parameter_and_the_fragment():
    url = "https://shop.example/a/b?x=1&token=2&flag#section"
    assert mask_url(url, frozenset(), True, "[masked]", True) == "https://shop.example/a/b"
    assert mask_url(url, frozenset({"token"}), True, "[masked]", False) == "https://shop.example/a/b?x=1&flag#section"
    assert mask_url("/a?x=1", frozenset(), False, "%2A", False) == "/a?x=%2A"
    assert mask_url("not a url", frozenset(), True, "", True) == "not a url"


def test_user_agent_parser_fills_what_is_missing(project, celery_worker, install, sdk):
    install({"source_type": "builtin", "builtin": "user_agent_parser"})
    sdk.capture("from_iphone", distinct_id="u1", properties={"$raw_user_agent": IPHONE})
    sdk.capture("already_known", distinct_id="u1", properties={"$raw_user_agent": WINDOWS_CHROME, "$browser": "Edge"})
    sdk.capture("no_agent", distinct_id="u1", properties={"plan": "pro"})
    sdk.flush()
    stored = by_event(project.id, 3)
    iphone = stored["from_iphone"]
    assert (iphone["$browser"], iphone["$browser_version"], iphone["$os"], iphone["$os_version"]) == (
        "Mobile Safari", "17.2", "iOS", "17.2",
    )  # fmt: skip
    assert iphone["$device_type"] == "Mobile"
    assert stored["no_agent"]["$os"] != "iOS"  # the SDK's own: the server's
    known = stored["already_known"]  # described by its sender: left alone
    assert (known["$browser"], known["$os"]) == ("Edge", stored["no_agent"]["$os"])
    assert "$device_type" not in known
    assert not any(key in stored["no_agent"] for key in ("$browser", "$device_type"))


def test_pii_hashing_without_a_salt_derives_one_per_project():
    def hashed(project_id: int) -> str:
        meta = SimpleNamespace(config={"properties": "email"}, state={}, project_id=project_id)
        pii_hashing.setup_plugin(meta)
        return pii_hashing.process_event({"properties": {"email": "a@b.c"}}, meta)["properties"]["email"]

    assert hashed(1) == hashed(1) != hashed(2)
    assert len(hashed(1)) == 64 and "a@b.c" not in hashed(1)
