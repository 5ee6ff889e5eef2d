"""Hash the listed properties with a per-project salt: HMAC-SHA256(salt, value), hex. Strings are
hashed as they are, other values as their JSON text; null stays null. A derived salt (no config)
is HMAC(SECRET_KEY, project id), so it changes if SECRET_KEY does."""

import hashlib
import hmac

import orjson
from django.conf import settings


def setup_plugin(meta):
    names = [name.strip() for name in str(meta.config.get("properties") or "").split(",")]
    meta.state["names"] = frozenset(name for name in names if name)
    salt = str(meta.config.get("salt") or "")
    if not salt:
        salt = hmac.new(settings.SECRET_KEY.encode(), f"pii-hashing:{meta.project_id}".encode(), "sha256").hexdigest()
    meta.state["salt"] = salt.encode()
    meta.state["hash_distinct_id"] = meta.config.get("hash_distinct_id") in (True, "true", "True", 1)


def hash_value(value, salt: bytes):
    if value is None:
        return None
    text = value if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return hmac.new(salt, text.encode(), hashlib.sha256).hexdigest()


def _hash_in(values, names, salt):
    if not isinstance(values, dict):
        return values
    return {key: hash_value(value, salt) if key in names else value for key, value in values.items()}


def process_event(event, meta):
    names, salt = meta.state["names"], meta.state["salt"]
    properties = event.get("properties")
    if isinstance(properties, dict):
        properties = _hash_in(properties, names, salt)
        for key in ("$set", "$set_once"):
            if isinstance(properties.get(key), dict):
                properties[key] = _hash_in(properties[key], names, salt)
        # Ingestion adds $ip from the request when the event has none: hash that one too.
        if "$ip" in names and "$ip" not in properties and event.get("ip"):
            properties["$ip"] = hash_value(event["ip"], salt)
        event["properties"] = properties
    for key in ("$set", "$set_once"):
        event[key] = _hash_in(event.get(key), names, salt)
    if "$ip" in names:
        event["ip"] = None
    if meta.state["hash_distinct_id"] and event.get("distinct_id") is not None:
        event["distinct_id"] = hash_value(str(event["distinct_id"]), salt)
    return event
