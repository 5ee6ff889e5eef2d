"""Plugin config values, checked against plugin.json; secrets masked on read.

Besides the fields of plugin.json every config may set the export buffering keys of
docs/contracts.md#plugin-api (`export_events_buffer_bytes`, `export_events_buffer_seconds`,
`export_events_to_ignore`).
"""

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

SECRET_MASK = "**************"  # noqa: S105 - the mask shown instead of a secret
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024

DEFAULT_BUFFER_BYTES = 1024 * 1024
DEFAULT_BUFFER_SECONDS = 10.0
BUFFER_KEYS = ("export_events_buffer_bytes", "export_events_buffer_seconds", "export_events_to_ignore")


class ConfigError(ValueError):
    """A config value is wrong; `key` names the field."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass
class NewAttachment:
    key: str
    file_name: str
    content_type: str
    contents: bytes


@dataclass
class CleanConfig:
    values: dict[str, Any]
    attachments: list[NewAttachment] = field(default_factory=list)


def validate_config(
    schema: list[dict],
    values: Any,
    *,
    existing: dict | None = None,
    existing_attachments: frozenset[str] = frozenset(),
) -> CleanConfig:
    """Check `values` against the plugin.json fields and return what to store.

    `existing` is the stored config when updating: a secret sent back as the mask keeps its value.
    Attachments come inline as `{"file_name", "content_type", "contents_base64"}` and are
    returned apart (they are stored as PluginAttachment rows, not in the config).
    """
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError("config", "config must be an object of {key: value}.")
    existing = existing or {}
    fields = {f["key"]: f for f in schema}
    for key in values:
        if key not in fields and key not in BUFFER_KEYS:
            known = ", ".join(sorted(fields)) or "no fields"
            raise ConfigError(key, f"Unknown config key {key!r}; this plugin's plugin.json defines {known}.")
    clean: dict[str, Any] = {}
    attachments: list[NewAttachment] = []
    for key, spec in fields.items():
        present = key in values and values[key] is not None and values[key] != ""
        if spec.get("secret") and values.get(key) == SECRET_MASK:
            if key in existing:
                clean[key] = existing[key]
            continue
        if spec["type"] == "attachment":
            if present:
                attachments.append(_attachment(key, values[key]))
            elif spec.get("required") and key not in existing_attachments:
                raise ConfigError(key, "This attachment is required: send {file_name, content_type, contents_base64}.")
            continue
        if not present:
            if "default" in spec and spec["default"] not in (None, ""):
                clean[key] = spec["default"]
            elif spec.get("required"):
                raise ConfigError(key, "This field is required.")
            continue
        clean[key] = _typed(key, spec, values[key])
    for key in BUFFER_KEYS:
        if key in values and values[key] is not None:
            clean[key] = _buffer_value(key, values[key])
    return CleanConfig(clean, attachments)


def _typed(key: str, spec: dict, value: Any) -> Any:
    type_ = spec["type"]
    if type_ == "string":
        if not isinstance(value, str):
            raise ConfigError(key, "Must be a string.")
        return value
    if type_ == "choice":
        if value not in spec["choices"]:
            raise ConfigError(key, f"Must be one of: {', '.join(spec['choices'])}.")
        return value
    if type_ == "boolean":
        if not isinstance(value, bool):
            raise ConfigError(key, "Must be true or false.")
        return value
    if type_ == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, "Must be a number.")
        return value
    if type_ == "json":
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ConfigError(key, f"Must be JSON: {exc}.") from None
        return value
    raise ConfigError(key, f"Unsupported field type {type_!r}.")  # parse_manifest prevents this


def _attachment(key: str, value: Any) -> NewAttachment:
    if not isinstance(value, dict) or not isinstance(value.get("contents_base64"), str):
        raise ConfigError(key, "An attachment is an object {file_name, content_type, contents_base64}.")
    try:
        contents = base64.b64decode(value["contents_base64"], validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(key, "contents_base64 is not valid base64.") from None
    if len(contents) > MAX_ATTACHMENT_BYTES:
        raise ConfigError(key, f"An attachment may be at most {MAX_ATTACHMENT_BYTES} bytes.")
    file_name = value.get("file_name") or key
    content_type = value.get("content_type") or "application/octet-stream"
    if not isinstance(file_name, str) or not isinstance(content_type, str):
        raise ConfigError(key, "file_name and content_type must be strings.")
    return NewAttachment(key, file_name[:300], content_type[:200], contents)


def _buffer_value(key: str, value: Any) -> Any:
    if key == "export_events_to_ignore":
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise ConfigError(key, "Must be a comma-separated string or a list of event names.")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(key, "Must be a number.")
    if key == "export_events_buffer_bytes" and not 1 <= value <= 100 * 1024 * 1024:
        raise ConfigError(key, "Must be from 1 to 104857600 (100 MiB).")
    if key == "export_events_buffer_seconds" and not 1 <= value <= 600:
        raise ConfigError(key, "Must be from 1 to 600 seconds.")
    return value


def mask_secrets(schema: list[dict], values: dict) -> dict:
    """The config as the API shows it: secret values replaced by the mask."""
    secret = {f["key"] for f in schema if f.get("secret")}
    return {key: (SECRET_MASK if key in secret and value not in (None, "") else value) for key, value in values.items()}


@dataclass(frozen=True)
class ExportSettings:
    buffer_bytes: int
    buffer_seconds: float
    ignore: frozenset[str]


def export_settings(values: dict) -> ExportSettings:
    ignore = values.get("export_events_to_ignore") or ""
    if isinstance(ignore, str):
        ignore = [name.strip() for name in ignore.split(",")]
    return ExportSettings(
        buffer_bytes=int(values.get("export_events_buffer_bytes") or DEFAULT_BUFFER_BYTES),
        buffer_seconds=float(values.get("export_events_buffer_seconds") or DEFAULT_BUFFER_SECONDS),
        ignore=frozenset(name for name in ignore if name),
    )
