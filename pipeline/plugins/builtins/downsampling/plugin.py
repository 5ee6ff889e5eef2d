"""Keep `percentage` % of distinct ids, chosen by hash: stable across events and processes."""

import hashlib


def setup_plugin(meta):
    percentage = meta.config.get("percentage", 100)
    if not isinstance(percentage, int | float) or not 0 <= percentage <= 100:
        raise ValueError("percentage must be a number from 0 to 100")
    meta.state["threshold"] = float(percentage) / 100


def keep(distinct_id, threshold):
    digest = hashlib.sha256(str(distinct_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < threshold


def process_event(event, meta):
    return event if keep(event.get("distinct_id"), meta.state["threshold"]) else None
