"""The events the bench sends: shaped like what posthog-js sends, built before any clock starts."""

import uuid
from datetime import UTC, datetime

import orjson

KNOWN_IDS = 500  # distinct ids that already have a person before the batch scenario


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(index: int, distinct_id: str, *, name: str = "$pageview", with_set: bool = False) -> dict:
    out = {
        "event": name,
        "distinct_id": distinct_id,
        "uuid": str(uuid.uuid4()),
        "timestamp": _now_iso(),
        "properties": {
            "$current_url": f"https://shop.example.com/products/{index % 97}?ref=newsletter",
            "$host": "shop.example.com",
            "$pathname": f"/products/{index % 97}",
            "$browser": "Chrome",
            "$browser_version": 120,
            "$os": "Mac OS X",
            "$device_type": "Desktop",
            "$screen_width": 1440,
            "$screen_height": 900,
            "$lib": "web",
            "$lib_version": "1.96.0",
            "$session_id": f"session-{index // 20}",
            "email": f"{distinct_id}@example.com",  # the property filter drops it
            "plan": "pro" if index % 3 == 0 else "free",
            "cart_value": index % 500 + 0.99,
        },
    }
    if with_set:
        out["$set"] = {"plan": out["properties"]["plan"], "last_seen_page": out["properties"]["$pathname"]}
    return out


def single_body(token: str, index: int, distinct_id: str) -> bytes:
    body = event(index, distinct_id)
    body["api_key"] = token
    return orjson.dumps(body)


def batch_body(token: str, events: list[dict]) -> bytes:
    return orjson.dumps({"api_key": token, "batch": events, "sent_at": _now_iso()})


def known_id(tag: str, index: int) -> str:
    return f"known-{tag}-{index % KNOWN_IDS}"


def mixed_events(tag: str, count: int, offset: int = 0) -> list[dict]:
    """Half from distinct ids that have a person already (with $set), half from new ones."""
    out = []
    for index in range(offset, offset + count):
        if index % 2 == 0:
            out.append(event(index, known_id(tag, index // 2), with_set=index % 4 == 0, name="product viewed"))
        else:
            out.append(event(index, f"anon-{tag}-{index}", name="product viewed"))
    return out


def warm_up_events(tag: str) -> list[dict]:
    """One event with $set per known distinct id, so each has a person before the measurement."""
    return [event(index, known_id(tag, index), with_set=True, name="signed in") for index in range(KNOWN_IDS)]
