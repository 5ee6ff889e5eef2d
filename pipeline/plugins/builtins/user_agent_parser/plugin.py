"""Browser, OS and device type from the user agent, with ua-parser (uap-core's maintained rules).
$device_type follows posthog-js's values: Mobile, Tablet or Desktop.

An event with no `$browser` is described by its user agent as a whole: browser, OS and device
type all come from it, replacing the `$os` a server SDK adds about the server it runs on. An
event with `$browser` was described by a browser SDK already and is left alone (unless
`overwrite`)."""

from ua_parser import parse

USER_AGENT_PROPERTIES = ("$raw_user_agent", "$useragent")
TABLET_HINTS = ("ipad", "tablet", "kindle", "silk/", "playbook")
MOBILE_OS = ("iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS")


def setup_plugin(meta):
    meta.state["overwrite"] = meta.config.get("overwrite") in (True, "true", "True", 1)


def _version(part) -> str | None:
    if part is None or not part.major:
        return None
    return ".".join(piece for piece in (part.major, part.minor, part.patch) if piece)


def device_type(agent: str, os_family: str | None, device_family: str | None) -> str:
    lowered = agent.lower()
    if any(hint in lowered for hint in TABLET_HINTS) or (os_family == "Android" and "mobile" not in lowered):
        return "Tablet"
    if os_family in MOBILE_OS or "mobile" in lowered or device_family == "iPhone":
        return "Mobile"
    return "Desktop"


def describe(agent: str) -> dict:
    """What the user agent says, only the properties it tells."""
    result = parse(agent)
    found = {}
    if result.user_agent is not None:
        found["$browser"] = result.user_agent.family
        found["$browser_version"] = _version(result.user_agent)
    if result.os is not None:
        found["$os"] = result.os.family
        found["$os_version"] = _version(result.os)
    if result.user_agent is not None or result.os is not None:
        device = result.device.family if result.device is not None else None
        found["$device_type"] = device_type(agent, found.get("$os"), device)
    return {key: value for key, value in found.items() if value}


def process_event(event, meta):
    properties = event.get("properties")
    if not isinstance(properties, dict):
        return event
    agent = next(
        (properties[key] for key in USER_AGENT_PROPERTIES if isinstance(properties.get(key), str) and properties[key]),
        "",
    )
    if not agent:
        return event
    if meta.state["overwrite"] or properties.get("$browser") in (None, ""):
        properties.update(describe(agent))
    return event
