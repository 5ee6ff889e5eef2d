"""Drop the configured properties from events before they are stored."""


def setup_plugin(meta):
    names = [name.strip() for name in str(meta.config.get("properties") or "").split(",")]
    meta.state["drop"] = frozenset(name for name in names if name)


def process_event(event, meta):
    drop = meta.state["drop"]
    if not drop:
        return event
    for key in ("properties", "$set", "$set_once"):
        values = event.get(key)
        if isinstance(values, dict):
            event[key] = {name: value for name, value in values.items() if name not in drop}
    if "$ip" in drop:
        event["ip"] = None
    return event
