"""OpenAPI details drf-spectacular cannot guess: the Bearer key scheme and the error body."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "code": {"type": "string"},
        "detail": {"type": "string"},
        "attr": {"type": "string", "nullable": True},
    },
    "required": ["type", "code", "detail", "attr"],
}
ERROR_STATUSES = {
    "400": "Invalid input; `attr` names the field.",
    "401": "No key, or an invalid or revoked key.",
    "403": "Not allowed for your role in this organization.",
    "404": "Not found, or not in your organizations.",
    "405": "Method not allowed.",
}


class PersonalAPIKeyScheme(OpenApiAuthenticationExtension):
    target_class = "bklog_app.api.authentication.PersonalAPIKeyAuthentication"
    name = "PersonalAPIKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A personal API key: `Bearer bkl_...`"}


def add_error_responses(result, generator, request, public):
    """Every operation can answer with the one error shape; document it everywhere."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for methods in result.get("paths", {}).values():
        for operation in methods.values():
            responses = operation.setdefault("responses", {})
            for status, description in ERROR_STATUSES.items():
                responses.setdefault(
                    status,
                    {"description": description,
                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                )  # fmt: skip
    return result
