"""One error body for the whole API: {"type", "code", "detail", "attr"}."""

from django.db import DataError
from django.http import JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

TYPES = {
    status.HTTP_400_BAD_REQUEST: "validation_error",
    status.HTTP_401_UNAUTHORIZED: "authentication_error",
    status.HTTP_403_FORBIDDEN: "authentication_error",
    status.HTTP_404_NOT_FOUND: "invalid_request",
    status.HTTP_405_METHOD_NOT_ALLOWED: "invalid_request",
    status.HTTP_429_TOO_MANY_REQUESTS: "throttled_error",
}


def exception_handler(exc, context):
    if isinstance(exc, OverflowError):
        # An id too large for the database's integers: it cannot exist.
        exc = exceptions.NotFound("No such resource.")
    if isinstance(exc, DataError) and "NUL" in str(exc):
        # PostgreSQL's text cannot hold U+0000, so a value carrying one was refused as a query's
        # parameter or a row's field: the client's input, not a fault of the server.
        exc = exceptions.ValidationError(
            "A parameter or field contains a NUL character (\\u0000), which no stored value can hold; remove it."
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    type_ = TYPES.get(response.status_code, "server_error" if response.status_code >= 500 else "invalid_request")
    if isinstance(exc, exceptions.ValidationError) and isinstance(exc.detail, dict):
        attr, detail = _first_error(exc.detail)
        code = _first_code(exc.get_codes(), attr)
    else:
        attr = None
        detail = exc.detail if isinstance(getattr(exc, "detail", None), str) else str(getattr(exc, "detail", exc))
        code = getattr(getattr(exc, "detail", None), "code", None) or getattr(exc, "default_code", "error")
        if isinstance(exc, exceptions.ValidationError):
            detail = "; ".join(str(item) for item in exc.detail) if isinstance(exc.detail, list) else str(exc.detail)
            code = "invalid_input"
    body = {"type": type_, "code": str(code), "detail": str(detail), "attr": attr}
    return Response(body, status=response.status_code, headers=_headers(response))


def _first_error(detail: dict, prefix: str = "") -> tuple[str, str]:
    for key, value in detail.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            return _first_error(value, name + "__")
        if isinstance(value, list) and value:
            first = value[0]
            if isinstance(first, dict):
                return _first_error(first, name + "__")
            return name, str(first)
        return name, str(value)
    return "", "Invalid input."


def _first_code(codes, attr: str) -> str:
    for part in attr.split("__") if attr else []:
        if isinstance(codes, dict):
            codes = codes.get(part, codes)
        while isinstance(codes, list) and codes:
            codes = codes[0]
    return codes if isinstance(codes, str) else "invalid_input"


def _headers(response: Response) -> dict:
    return {key: value for key, value in response.items() if key in ("WWW-Authenticate", "Retry-After", "Allow")}


def not_found(request, exception=None):
    """Django's 404 for URLs no view matched, in the API's error shape."""
    body = {"type": "invalid_request", "code": "not_found", "detail": f"No such resource: {request.path}", "attr": None}
    return JsonResponse(body, status=404)


def bad_request(request, exception=None):
    """Django's 400 (a request it refuses before any view, e.g. too many form fields)."""
    body = {"type": "validation_error", "code": "bad_request", "detail": str(exception or "Bad request."), "attr": None}
    return JsonResponse(body, status=400)


def permission_denied(request, exception=None):
    body = {
        "type": "authentication_error",
        "code": "permission_denied",
        "detail": str(exception or "Forbidden."),
        "attr": None,
    }
    return JsonResponse(body, status=403)


def server_error(request):
    body = {
        "type": "server_error",
        "code": "error",
        "detail": "Internal error. It is logged with this response's X-Request-Id; report that id to the operators.",
        "attr": None,
    }
    return JsonResponse(body, status=500)
