"""The SDK endpoints: remote config (`/array/<token>/config`, `config.js`), `/flags/`, `/decide/`.

Answers follow PostHog's (its remote config views and its feature-flags service):
- remote config: 200 for a project's token, 404 for a token no project has, 400 for one that
  cannot be a token;
- `/flags/` and `/decide/` POST: the request's token (body `token` / `api_key`, or query
  `token`) must be a project's: 401 `missing_api_key` without one, 401 `invalid_api_key` for an
  unknown one; 400 for a body that does not decode or lacks `distinct_id`. Bodies arrive as
  capture's do (bklog_app/capture/decoding.py: gzip, base64 form, plain JSON);
- `/flags/` and `/decide/` GET: the empty answer (and `supportedCompression`), without a token,
  as PostHog's service gives;
- every answer and every preflight carries capture's CORS headers.

The response format follows the version parameter `v` as PostHog's service reads it: on
`/flags/`, v >= 2 gives `flags` (objects per flag) and anything else `featureFlags` plus
`featureFlagPayloads`; on `/decide/`, v=1 (or none) a list of enabled flag keys, v=2 a map of
them, v=3 the `/flags/` v1 format, v >= 4 the v2 format. Config fields come with `config=true`
and on `/decide/`; a POST to `/flags/` with neither `v` nor `config` is answered as
`v=2&config=true`. Errors are bklog's JSON errors, {type, code, detail, attr} (PostHog's
service answers its 401s as text).
"""

import re
import uuid

import orjson
import structlog
from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from bklog_app.capture.decoding import decode_payload, find_token
from bklog_app.capture.errors import CaptureError, invalid_api_key, invalid_payload, server_error
from bklog_app.capture.views import json_response
from bklog_app.sdk.remote_config import SUPPORTED_COMPRESSION, config_js, flags_config, remote_config
from pipeline.ingestion import projects
from pipeline.ingestion.projects import ProjectInfo

logger = structlog.get_logger(__name__)

TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
CONFIG_METHODS = "GET, HEAD, OPTIONS"
FLAGS_METHODS = "GET, POST, OPTIONS, HEAD"


def missing_api_key() -> CaptureError:
    return CaptureError(
        401,
        "authentication_error",
        "missing_api_key",
        "API key not found. Send your project's API key (token) as body field 'token' or 'api_key', "
        "or as query parameter 'token'.",
    )


def missing_distinct_id() -> CaptureError:
    return CaptureError(
        400, "validation_error", "missing_distinct_id", "The body has no 'distinct_id'.", attr="distinct_id"
    )


def invalid_token() -> CaptureError:
    return CaptureError(
        400, "validation_error", "invalid_input", "Invalid token: a project token has only letters, digits, - and _."
    )


def unknown_token() -> CaptureError:
    return CaptureError(404, "invalid_request", "not_found", "No project has this token.")


def method_not_allowed(allowed: str) -> CaptureError:
    return CaptureError(405, "invalid_request", "method_not_allowed", f"Use one of {allowed}.")


@csrf_exempt
def config(request, token: str, script: str | None = None) -> HttpResponse:
    """`GET /array/<token>/config` (JSON) and `/array/<token>/config.js` (the script posthog-js loads)."""
    if request.method == "OPTIONS":
        return _answer(request, 204)
    try:
        if request.method not in ("GET", "HEAD"):
            raise method_not_allowed(CONFIG_METHODS)
        if not TOKEN.match(token):
            raise invalid_token()
        project = _project(token)
        if project is None:
            raise unknown_token()
    except CaptureError as error:
        return _refuse(request, error, CONFIG_METHODS)
    if script:
        return _answer(request, 200, config_js(token, project).encode(), "application/javascript")
    return _answer(request, 200, orjson.dumps(remote_config(token, project)))


@csrf_exempt
def flags(request, endpoint: str) -> HttpResponse:
    """`/flags/` and `/decide/` (the `endpoint`)."""
    if request.method == "OPTIONS":
        return _answer(request, 204)
    decide = endpoint == "decide"
    version = _version(request.GET.get("v"))
    try:
        if request.method in ("GET", "HEAD"):
            body = _response_body(decide, version, {"supportedCompression": SUPPORTED_COMPRESSION})
            return _answer(request, 200, orjson.dumps(body))
        if request.method != "POST":
            raise method_not_allowed(FLAGS_METHODS)
        project = _flags_project(request)
    except CaptureError as error:
        return _refuse(request, error, FLAGS_METHODS)
    with_config = _flag(request.GET.get("config"))
    if decide and with_config is None:
        with_config = True
    elif version is None and with_config is None:  # PostHog's default: the newest format, with config
        version, with_config = 2, True
    body = _response_body(decide, version, flags_config(project) if with_config else {})
    return _answer(request, 200, orjson.dumps(body))


def _flags_project(request) -> ProjectInfo:
    payload, form = decode_payload(request, settings.CAPTURE_MAX_EVENT_BYTES)
    if not isinstance(payload, dict):
        raise invalid_payload("The body must be a JSON object with 'token' and 'distinct_id'.")
    token = find_token(request, form, payload)
    if token is None:
        raise missing_api_key()
    distinct_id = payload.get("distinct_id")
    if distinct_id is None or isinstance(distinct_id, (dict, list, bool)) or not str(distinct_id).strip():
        raise missing_distinct_id()
    project = _project(token)
    if project is None:
        raise invalid_api_key()
    return project


def _response_body(decide: bool, version: int | None, config: dict) -> dict:
    """The empty flags answer in the format `version` asks for (see the module docstring)."""
    request_id = str(uuid.uuid4())
    v2 = {"errorsWhileComputingFlags": False, "flags": {}, "requestId": request_id}
    v1 = {"errorsWhileComputingFlags": False, "featureFlags": {}, "featureFlagPayloads": {}, "requestId": request_id}
    if not decide:
        body = v2 if version is not None and version >= 2 else v1
    elif version is None or version <= 1:
        body = {"featureFlags": [], "requestId": request_id}
    elif version == 2:
        body = {"featureFlags": {}, "requestId": request_id}
    else:
        body = v1 if version == 3 else v2
    return {**body, **config}


def _version(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        return 1  # PostHog's service reads an unparsable version as 1


def _flag(value: str | None) -> bool | None:
    if value is None or value == "":
        return None
    return value.lower() in ("true", "1", "yes", "on")


def _project(token: str) -> ProjectInfo | None:
    try:
        return projects.project_for_token(token)
    except Exception as exc:
        raise server_error(
            f"The project database or Redis is unavailable ({type(exc).__name__}); retry later."
        ) from exc


def _refuse(request, error: CaptureError, allowed: str) -> HttpResponse:
    if error.status >= 500:
        logger.error("SDK request refused", status=error.status, code=error.code, detail=error.detail)
    response = _answer(request, error.status, orjson.dumps(error.body()))
    if error.status == 405:
        response["Allow"] = allowed
    return response


def _answer(request, status: int, body: bytes = b"", content_type: str = "application/json") -> HttpResponse:
    return json_response(request, status, body, content_type=content_type)
