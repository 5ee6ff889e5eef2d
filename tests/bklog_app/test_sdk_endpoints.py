"""The endpoints the PostHog SDKs call besides capture (bklog_app/sdk/): remote config, its
script form, /flags/ and /decide/: answer shapes, token errors, bodies, CORS, and project
settings changed over the API showing in the config.

Through Django's handler only: the fast path (bklog_app/capture/fastpath.py) hands these URLs
to Django unchanged; capture's preflights both ways are in test_capture_bodies.py."""

import base64
import gzip
import json
import re
import shutil
import subprocess
import uuid
from urllib.parse import urlencode

import orjson
import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from posthog import Posthog
from rest_framework.test import APIClient

from bklog_app.models import Membership
from tests.factories import make_project, make_user_with_key

pytestmark = pytest.mark.django_db

ORIGIN = "https://shop.example.com"
REMOTE_CONFIG_KEYS = {
    "token", "supportedCompression", "hasFeatureFlags", "captureDeadClicks", "capturePerformance",
    "autocapture_opt_out", "autocaptureExceptions", "analytics", "elementsChainAsString", "errorTracking",
    "sessionRecording", "heatmaps", "productTours", "defaultIdentifiedOnly", "siteApps",
}  # fmt: skip
FLAGS_CONFIG = {
    "supportedCompression": ["gzip", "gzip-js"],
    "autocapture_opt_out": False,
    "analytics": {"endpoint": "/i/v0/e/"},
    "elementsChainAsString": True,
    "capturePerformance": False,
    "config": {"enable_collect_everything": True},
    "autocaptureExceptions": False,
    "sessionRecording": False,
    "surveys": False,
    "toolbarParams": {},
    "isAuthenticated": False,
    "siteApps": [],
    "heatmaps": False,
    "flagsPersistenceDefault": False,
    "defaultIdentifiedOnly": True,
    "captureDeadClicks": False,
    "errorTracking": {"autocaptureExceptions": False, "suppressionRules": []},
}


@pytest.fixture
def project_admin(project) -> APIClient:
    user, key = make_user_with_key(None)
    Membership.objects.create(organization=project.organization, user=user, role="admin")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def flags_body(project, **fields) -> bytes:
    return orjson.dumps({"token": project.api_token, "distinct_id": "visitor-1", **fields})


def request_id(body: dict) -> str:
    value = body.pop("requestId")
    assert str(uuid.UUID(value)) == value
    return value


def assert_error(response, status: int, body: dict) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json() == body


# --- Remote config -------------------------------------------------------------------------


def test_remote_config_json_for_a_new_project(client, project):
    """PostHog's remote config for a project without flags, recordings or site apps; without
    `surveys`, so that posthog-js does not load a surveys script bklog does not serve."""
    response = client.get(f"/array/{project.api_token}/config", HTTP_ORIGIN=ORIGIN)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert response.json() == {
        "token": project.api_token,
        "supportedCompression": ["gzip", "gzip-js"],
        "hasFeatureFlags": False,
        "captureDeadClicks": False,
        "capturePerformance": False,
        "autocapture_opt_out": False,
        "autocaptureExceptions": False,
        "analytics": {"endpoint": "/i/v0/e/"},
        "elementsChainAsString": True,
        "errorTracking": {"autocaptureExceptions": False, "suppressionRules": []},
        "sessionRecording": False,
        "heatmaps": False,
        "productTours": False,
        "defaultIdentifiedOnly": True,
        "siteApps": [],
    }


def _script_config(script: str, token: str) -> dict:
    """The object config.js assigns to window._POSTHOG_REMOTE_CONFIG[token], read by node when
    there is one (the script is run as a browser would), else from the script's text."""
    if shutil.which("node"):
        program = f"var window = {{}};\n{script}\nprocess.stdout.write(JSON.stringify(window._POSTHOG_REMOTE_CONFIG))"
        out = subprocess.run(["node", "-e", program], capture_output=True, text=True, timeout=30, check=True)
        return json.loads(out.stdout)
    match = re.search(r"\[(\".*?\")\] = \{\n    config: (\{.*\}),\n    siteApps: \[\]", script)
    return {json.loads(match[1]): {"config": json.loads(match[2]), "siteApps": []}}


def test_remote_config_script_assigns_the_window_global(client, project):
    response = client.get(f"/array/{project.api_token}/config.js", HTTP_ORIGIN=ORIGIN)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/javascript"
    assert response["Access-Control-Allow-Origin"] == ORIGIN  # loaded with crossorigin="anonymous"
    assigned = _script_config(response.content.decode(), project.api_token)
    json_config = client.get(f"/array/{project.api_token}/config").json()
    del json_config["siteApps"]
    assert assigned == {project.api_token: {"config": json_config, "siteApps": []}}


@pytest.mark.parametrize("suffix", ["", ".js"])
def test_remote_config_unknown_token_is_404(client, project, suffix):
    response = client.get(f"/array/phc_no_such_project/config{suffix}", HTTP_ORIGIN=ORIGIN)
    assert_error(
        response,
        404,
        {"type": "invalid_request", "code": "not_found", "detail": "No project has this token.", "attr": None},
    )
    assert response["Access-Control-Allow-Origin"] == ORIGIN


def test_remote_config_malformed_token_is_400(client, project):
    response = client.get("/array/phc_bad%21token/config")
    assert_error(
        response,
        400,
        {
            "type": "validation_error",
            "code": "invalid_input",
            "detail": "Invalid token: a project token has only letters, digits, - and _.",
            "attr": None,
        },
    )


def test_remote_config_post_is_405(client, project):
    response = client.post(f"/array/{project.api_token}/config")
    assert_error(
        response,
        405,
        {
            "type": "invalid_request",
            "code": "method_not_allowed",
            "detail": "Use one of GET, HEAD, OPTIONS.",
            "attr": None,
        },
    )
    assert response["Allow"] == "GET, HEAD, OPTIONS"


def test_settings_changed_over_the_api_show_in_the_config(
    client, project, project_admin, django_capture_on_commit_callbacks
):
    assert client.get(f"/array/{project.api_token}/config").json()["autocapture_opt_out"] is False  # now cached
    settings = {
        "autocapture_opt_out": True,
        "capture_pageview": False,
        "capture_pageleave": False,
        "default_identified_only": False,
        "capture_performance_opt_in": True,
        "autocapture_web_vitals_opt_in": True,
        "autocapture_exceptions_opt_in": True,
        "heatmaps_opt_in": True,
        "capture_dead_clicks": True,
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = project_admin.patch(f"/api/projects/{project.id}/", settings, format="json")
    assert response.status_code == 200, response.content
    shown = response.json()
    assert {name: shown[name] for name in settings} == settings
    assert shown["posthog_js_options"] == {
        "capture_pageview": False,
        "capture_pageleave": False,
        "person_profiles": "always",
    }

    config = client.get(f"/array/{project.api_token}/config").json()
    assert config["autocapture_opt_out"] is True
    assert config["defaultIdentifiedOnly"] is False
    assert config["capturePerformance"] == {
        "network_timing": True,
        "web_vitals": True,
        "web_vitals_allowed_metrics": None,
    }
    assert config["autocaptureExceptions"] is True
    assert config["errorTracking"] == {"autocaptureExceptions": True, "suppressionRules": []}
    assert config["heatmaps"] is True
    assert config["captureDeadClicks"] is True
    assert set(config) == REMOTE_CONFIG_KEYS

    flags = client.post("/flags/?v=2&config=true", data=flags_body(project), content_type="application/json").json()
    assert flags["autocapture_opt_out"] is True
    assert flags["autocaptureExceptions"] == {"endpoint": "/e/"}
    assert flags["capturePerformance"] == config["capturePerformance"]


def test_settings_changed_in_the_admin_show_in_the_config(client, project, django_capture_on_commit_callbacks):
    operator = get_user_model().objects.create_superuser("operator", "ops@example.com", "pw")
    client.force_login(operator)
    form = {
        "organization": project.organization_id,
        "name": project.name,
        "rate_limit_per_minute": "",
        "capture_pageview": "on",
        "capture_pageleave": "on",
        "autocapture_opt_out": "on",  # the browser SDK section; unchecked boxes are left out
        "heatmaps_opt_in": "on",
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("admin:bklog_app_project_change", args=[project.pk]), form)
    assert response.status_code == 302, response.content
    config = client.get(f"/array/{project.api_token}/config").json()
    assert (config["autocapture_opt_out"], config["heatmaps"], config["defaultIdentifiedOnly"]) == (True, True, False)


def test_new_project_settings_defaults_over_the_api(project, api_client):
    shown = api_client.get(f"/api/projects/{project.id}/").json()
    assert {name: shown[name] for name in ("autocapture_opt_out", "capture_pageview", "capture_pageleave")} == {
        "autocapture_opt_out": False,
        "capture_pageview": True,
        "capture_pageleave": True,
    }
    assert shown["default_identified_only"] is True
    assert shown["posthog_js_options"] == {
        "capture_pageview": True,
        "capture_pageleave": True,
        "person_profiles": "identified_only",
    }


def test_performance_without_web_vitals_has_no_metric_list(client):
    project = make_project(capture_performance_opt_in=True)
    config = client.get(f"/array/{project.api_token}/config").json()
    assert config["capturePerformance"] == {"network_timing": True, "web_vitals": False}


# --- /flags/ and /decide/ ------------------------------------------------------------------


def test_flags_v2_as_posthog_js_asks(client, project):
    response = client.post("/flags/?v=2", data=flags_body(project), content_type="application/json")
    assert response.status_code == 200
    body = response.json()
    request_id(body)
    assert body == {"errorsWhileComputingFlags": False, "flags": {}}


def test_flags_v2_with_config(client, project):
    body = client.post("/flags/?v=2&config=true", data=flags_body(project), content_type="application/json").json()
    request_id(body)
    assert body == {"errorsWhileComputingFlags": False, "flags": {}, **FLAGS_CONFIG}


def test_flags_v1(client, project):
    body = client.post("/flags/?v=1", data=flags_body(project), content_type="application/json").json()
    request_id(body)
    assert body == {"errorsWhileComputingFlags": False, "featureFlags": {}, "featureFlagPayloads": {}}


def test_flags_without_version_or_config_is_v2_with_config(client, project):
    body = client.post("/flags/", data=flags_body(project), content_type="application/json").json()
    request_id(body)
    assert body == {"errorsWhileComputingFlags": False, "flags": {}, **FLAGS_CONFIG}


def test_flags_v4_is_v2_as_posthog_python_asks(client, project):
    body = orjson.dumps({"api_key": project.api_token, "distinct_id": "d", "groups": {}})
    response = client.post(
        "/flags/?v=4", data=gzip.compress(body), content_type="application/json", HTTP_CONTENT_ENCODING="gzip"
    )
    assert response.status_code == 200
    assert set(response.json()) == {"errorsWhileComputingFlags", "flags", "requestId"}


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (None, {"featureFlags": []}),
        ("1", {"featureFlags": []}),
        ("2", {"featureFlags": {}}),
        ("3", {"errorsWhileComputingFlags": False, "featureFlags": {}, "featureFlagPayloads": {}}),
        ("4", {"errorsWhileComputingFlags": False, "flags": {}}),
    ],
)
def test_decide_versions_all_with_config(client, project, version, expected):
    query = f"?v={version}" if version else ""
    response = client.post(f"/decide/{query}", data=flags_body(project), content_type="application/json")
    assert response.status_code == 200
    body = response.json()
    request_id(body)
    assert body == {**expected, **FLAGS_CONFIG}


@pytest.mark.parametrize("how", ["gzip-js query", "gzip magic only", "base64 form", "form with token field"])
def test_flags_bodies_decode_as_captures_do(client, project, how):
    raw = flags_body(project)
    if how == "gzip-js query":
        response = client.post("/flags/?v=2&compression=gzip-js", data=gzip.compress(raw), content_type="text/plain")
    elif how == "gzip magic only":
        response = client.post("/flags/?v=2", data=gzip.compress(raw), content_type="text/plain")
    elif how == "base64 form":
        body = urlencode({"data": base64.b64encode(raw).decode()})
        response = client.post(
            "/flags/?v=2&compression=base64", data=body, content_type="application/x-www-form-urlencoded"
        )
    else:
        body = urlencode({"data": orjson.dumps({"distinct_id": "d"}).decode(), "token": project.api_token})
        response = client.post("/flags/?v=2", data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200, response.content
    assert response.json()["flags"] == {}


@pytest.mark.parametrize("path", ["/flags/?v=2", "/flags", "/decide/?v=3"])
def test_flags_get_answers_without_a_token(client, path):
    response = client.get(path)
    assert response.status_code == 200
    body = response.json()
    request_id(body)
    assert body["supportedCompression"] == ["gzip", "gzip-js"]


def test_flags_get_shapes(client):
    v2 = client.get("/flags/?v=2").json()
    v1 = client.get("/flags/?v=1").json()
    unversioned = client.get("/flags/").json()
    request_id(v2), request_id(v1), request_id(unversioned)
    assert unversioned == v1  # a GET is not given POST's newest-format default, as in PostHog's service
    assert v2 == {"errorsWhileComputingFlags": False, "flags": {}, "supportedCompression": ["gzip", "gzip-js"]}
    assert v1 == {
        "errorsWhileComputingFlags": False,
        "featureFlags": {},
        "featureFlagPayloads": {},
        "supportedCompression": ["gzip", "gzip-js"],
    }


@pytest.mark.parametrize("path", ["/flags/?v=2", "/decide/?v=3"])
def test_flags_unknown_token_is_401(client, project, path):
    body = orjson.dumps({"token": "phc_not_a_project", "distinct_id": "d"})
    response = client.post(path, data=body, content_type="application/json", HTTP_ORIGIN=ORIGIN)
    assert_error(
        response,
        401,
        {
            "type": "authentication_error",
            "code": "invalid_api_key",
            "detail": "Project API key invalid. You can find your project API key in the project settings "
            "(GET /api/projects/).",
            "attr": None,
        },
    )
    assert response["Access-Control-Allow-Origin"] == ORIGIN


def test_flags_without_token_is_401(client, project):
    response = client.post("/flags/?v=2", data=orjson.dumps({"distinct_id": "d"}), content_type="application/json")
    assert_error(
        response,
        401,
        {
            "type": "authentication_error",
            "code": "missing_api_key",
            "detail": "API key not found. Send your project's API key (token) as body field 'token' or 'api_key', "
            "or as query parameter 'token'.",
            "attr": None,
        },
    )


@pytest.mark.parametrize("distinct_id", [None, "", "  ", {"a": 1}])
def test_flags_without_distinct_id_is_400(client, project, distinct_id):
    fields = (
        {"token": project.api_token}
        if distinct_id is None
        else {"token": project.api_token, "distinct_id": distinct_id}
    )
    response = client.post("/flags/?v=2", data=orjson.dumps(fields), content_type="application/json")
    assert_error(
        response,
        400,
        {
            "type": "validation_error",
            "code": "missing_distinct_id",
            "detail": "The body has no 'distinct_id'.",
            "attr": "distinct_id",
        },
    )


def test_flags_body_not_an_object_is_400(client, project):
    response = client.post("/flags/?v=2", data=b"[1, 2]", content_type="application/json")
    assert_error(
        response,
        400,
        {
            "type": "validation_error",
            "code": "invalid_payload",
            "detail": "The body must be a JSON object with 'token' and 'distinct_id'.",
            "attr": None,
        },
    )


def test_flags_undecodable_body_is_400(client, project):
    response = client.post("/flags/?v=2", data=b"{not json", content_type="application/json")
    assert_error(
        response,
        400,
        {
            "type": "validation_error",
            "code": "invalid_payload",
            "detail": "The body is neither JSON nor base64-encoded JSON.",
            "attr": None,
        },
    )


def test_flags_empty_body_is_400(client, project):
    response = client.post("/flags/?v=2", data=b"", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "no_data"


def test_flags_put_is_405(client, project):
    response = client.put("/flags/?v=2", data=flags_body(project), content_type="application/json")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert response["Allow"] == "GET, POST, OPTIONS, HEAD"


def test_redis_down_is_503_with_cors_and_recovers(client, project, servers):
    """The token lookup checks the project epoch in Redis (pipeline/ingestion/projects.py)."""
    redis = servers["redis"]
    redis.stop()
    try:
        config = client.get(f"/array/{project.api_token}/config", HTTP_ORIGIN=ORIGIN)
        flags = client.post("/flags/?v=2", data=flags_body(project), content_type="application/json")
    finally:
        redis.start()
    down = {
        "type": "server_error",
        "code": "server_error",
        "detail": "The project database or Redis is unavailable (ConnectionError); retry later.",
        "attr": None,
    }
    assert_error(config, 503, down)
    assert_error(flags, 503, down)
    assert config["Access-Control-Allow-Origin"] == ORIGIN
    assert client.get(f"/array/{project.api_token}/config").status_code == 200


# --- CORS ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/flags/?v=2", "/decide/?v=3", "/array/phc_x/config", "/array/phc_x/config.js", "/e/"]
)
def test_preflight_grants_what_the_browser_asks(client, path):
    response = client.options(
        path,
        HTTP_ORIGIN=ORIGIN,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type,x-posthog-session-id,traceparent",
    )
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert response["Access-Control-Allow-Credentials"] == "true"
    assert "POST" in response["Access-Control-Allow-Methods"]
    allowed = {name.strip().lower() for name in response["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "content-encoding", "x-posthog-session-id", "traceparent"} <= allowed
    assert response["Vary"] == "Origin"


def test_answers_carry_cors_headers(client, project):
    response = client.post("/flags/?v=2", data=flags_body(project), content_type="text/plain", HTTP_ORIGIN=ORIGIN)
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert response["Access-Control-Allow-Credentials"] == "true"


def test_no_cors_headers_without_an_origin(client, project):
    response = client.get(f"/array/{project.api_token}/config")
    assert "Access-Control-Allow-Origin" not in response


# --- The real SDKs -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("gzip_body", [False, True])
def test_posthog_python_reads_the_flags_answer(live_server, project, gzip_body):
    """posthog-python posts to /flags/?v=4 with `api_key` in the body: it must read the answer as
    a successful one with no flags, not as an error."""
    sdk = Posthog(project.api_token, host=live_server.url, gzip=gzip_body, sync_mode=True)
    decision = sdk.get_flags_decision("visitor-1")
    assert decision.get("flags") == {}
    assert decision.get("errorsWhileComputingFlags") is False
    assert sdk.get_all_flags("visitor-1") == {}
    assert sdk.evaluate_flags("visitor-1").get_flag("new-checkout") is None
    sdk.shutdown()


# --- Flag definitions for local evaluation ---------------------------------------------------


@pytest.mark.parametrize("path", ["/flags/definitions", "/api/feature_flag/local_evaluation/"])
def test_flag_definitions_for_a_member_key(project, api_client, path):
    response = api_client.get(path, {"token": project.api_token, "send_cohorts": ""})
    assert response.status_code == 200, response.content
    assert response.json() == {"flags": [], "group_type_mapping": {}, "cohorts": {}}


def test_flag_definitions_without_a_key_is_401(client, project):
    response = client.get("/flags/definitions", {"token": project.api_token})
    assert_error(
        response,
        401,
        {
            "type": "authentication_error",
            "code": "not_authenticated",
            "detail": "Authentication credentials were not provided.",
            "attr": None,
        },
    )


def test_flag_definitions_of_another_organizations_project_is_404(project, api_client):
    other = make_project()
    response = api_client.get("/flags/definitions", {"token": other.api_token})
    assert_error(
        response,
        404,
        {"type": "invalid_request", "code": "not_found", "detail": "No project of yours has this token.", "attr": None},
    )


def test_flag_definitions_for_a_token_with_a_nul_character_is_404(project, api_client):
    response = api_client.get("/api/feature_flag/local_evaluation/", {"token": project.api_token + "\x00"})
    assert_error(
        response,
        404,
        {"type": "invalid_request", "code": "not_found", "detail": "No project of yours has this token.", "attr": None},
    )


def test_flag_definitions_without_a_token_is_400(project, api_client):
    response = api_client.get("/flags/definitions")
    assert_error(
        response,
        400,
        {
            "type": "validation_error",
            "code": "invalid",
            "detail": "The project's token is required (query parameter token).",
            "attr": "token",
        },
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_posthog_python_local_evaluation_loads_no_flags(live_server, project):
    _, key = make_user_with_key(project.organization)
    errors = []
    sdk = Posthog(
        project.api_token,
        host=live_server.url,
        secret_key=key,
        sync_mode=True,
        on_error=lambda error, _items: errors.append(error),
    )
    sdk.load_feature_flags()
    assert sdk.feature_flags == []
    assert errors == []
    sdk.shutdown()
