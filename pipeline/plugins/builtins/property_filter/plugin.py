"""Drop the configured properties from events before they are stored."""


def setup_plugin(meta):
    names = [name.strip() for name in str(meta.config.get("properties") or "").split(",")]
    meta.state["drop"] = frozenset(name for name in names if name)


def process_event(event, meta):
    """A new event without the dropped properties; the one given is left as it was (plugin.json
    says so, and the chain relies on it)."""
    drop = meta.state["drop"]
    if not drop:
        return event
    out = dict(event)
    for key in ("properties", "$set", "$set_once"):
        values = event.get(key)
        if isinstance(values, dict):
            out[key] = {name: value for name, value in values.items() if name not in drop}
    if "$ip" in drop:
        out["ip"] = None
    return out
