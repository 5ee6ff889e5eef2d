"""plugin.json: parsed and checked once, when a plugin is created or its files change."""

import json
import re
from typing import Any

FIELD_TYPES = ("string", "choice", "attachment", "json", "boolean", "number")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
_MAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.py$")


class ManifestError(ValueError):
    """plugin.json is missing, not JSON, or does not follow the docs/contracts.md#plugin-api format."""


def parse_manifest(text: str | bytes | dict) -> dict[str, Any]:
    """Return the checked plugin.json as a dict; raise ManifestError saying what to fix."""
    if isinstance(text, dict):
        data = text
    else:
        try:
            data = json.loads(text)
        except (ValueError, TypeError) as exc:
            raise ManifestError(f"plugin.json is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError("plugin.json must be a JSON object with at least a `name`.")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ManifestError("plugin.json needs a non-empty string `name`.")
    main = data.get("main", "plugin.py")
    if not isinstance(main, str) or not _MAIN.match(main):
        raise ManifestError("plugin.json `main` must be a Python file name in the plugin folder, such as plugin.py.")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ManifestError("plugin.json `description` must be a string.")
    fields = data.get("config", [])
    if not isinstance(fields, list):
        raise ManifestError("plugin.json `config` must be a list of fields.")
    seen: set[str] = set()
    checked = [_check_field(field, index, seen) for index, field in enumerate(fields)]
    return {**data, "name": name.strip(), "main": main, "description": description, "config": checked}


def _check_field(field: Any, index: int, seen: set[str]) -> dict:
    where = f"plugin.json config[{index}]"
    if not isinstance(field, dict):
        raise ManifestError(f"{where} must be an object with `key` and `type`.")
    key = field.get("key")
    if not isinstance(key, str) or not _KEY.match(key):
        raise ManifestError(f"{where} needs a `key` made of letters, digits and underscores.")
    if key in seen:
        raise ManifestError(f"{where}: key {key!r} appears twice.")
    seen.add(key)
    type_ = field.get("type", "string")
    if type_ not in FIELD_TYPES:
        raise ManifestError(f"{where} ({key}): type must be one of {', '.join(FIELD_TYPES)}, not {type_!r}.")
    if type_ == "choice":
        choices = field.get("choices")
        if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
            raise ManifestError(f"{where} ({key}): a choice field needs `choices`, a non-empty list of strings.")
    for flag in ("required", "secret"):
        if not isinstance(field.get(flag, False), bool):
            raise ManifestError(f"{where} ({key}): `{flag}` must be true or false.")
    return {
        **field,
        "key": key,
        "type": type_,
        "required": field.get("required", False),
        "secret": field.get("secret", False),
    }
