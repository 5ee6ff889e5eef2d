"""Errors the capture API answers with, in PostHog's shape: type, code, detail, attr."""

from dataclasses import dataclass


@dataclass
class CaptureError(Exception):
    status: int
    type: str
    code: str
    detail: str
    attr: str | None = None

    def body(self) -> dict:
        return {"type": self.type, "code": self.code, "detail": self.detail, "attr": self.attr}


def invalid_payload(detail: str, attr: str | None = None) -> CaptureError:
    return CaptureError(400, "validation_error", "invalid_payload", detail, attr)


def no_data(
    detail: str = "No data found. Make sure to use a POST request when sending the payload in the body of the request.",
) -> CaptureError:
    return CaptureError(400, "validation_error", "no_data", detail)


def missing_api_key() -> CaptureError:
    return CaptureError(
        401,
        "authentication_error",
        "missing_api_key",
        "API key not found. You must pass your project's API key (token) in the request: as "
        "query parameter 'token' or 'api_key', as body field 'api_key', or in "
        "properties.token of the first event.",
    )


def invalid_api_key() -> CaptureError:
    return CaptureError(
        401,
        "authentication_error",
        "invalid_api_key",
        "Project API key invalid. You can find your project API key in the project settings (GET /api/projects/).",
    )


def payload_too_large(limit: int) -> CaptureError:
    return CaptureError(
        413,
        "validation_error",
        "payload_too_large",
        f"The request body is larger than {limit} bytes. Send fewer events per request.",
    )


def rate_limited(limit: int) -> CaptureError:
    return CaptureError(
        429,
        "throttled_error",
        "rate_limited",
        f"This project is over its rate limit of {limit} events per minute. Retry later, "
        "or ask an administrator to raise the project's rate limit.",
    )


def server_error(detail: str) -> CaptureError:
    return CaptureError(503, "server_error", "server_error", detail)
