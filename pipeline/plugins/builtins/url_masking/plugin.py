"""Strip or mask query parameters in the URL properties PostHog SDKs send. Parameter names are
matched case-insensitively; the rest of the URL is kept byte for byte (no re-encoding)."""

from urllib.parse import quote, urlsplit, urlunsplit

URL_PROPERTIES = ("$current_url", "$referrer", "$pathname")
NAMES = (*URL_PROPERTIES, *(f"$initial_{name[1:]}" for name in URL_PROPERTIES))


def setup_plugin(meta):
    names = [name.strip().lower() for name in str(meta.config.get("parameters") or "").split(",")]
    meta.state["parameters"] = frozenset(name for name in names if name)  # empty: all
    mode = meta.config.get("mode") or "mask"
    if mode not in ("mask", "strip"):
        raise ValueError("mode must be mask or strip")
    meta.state["strip"] = mode == "strip"
    meta.state["mask"] = quote(str(meta.config.get("mask") or "[masked]"), safe="[]")
    meta.state["strip_fragment"] = meta.config.get("strip_fragment") in (True, "true", "True", 1)


def mask_url(url: str, parameters: frozenset, strip: bool, mask: str, strip_fragment: bool = False) -> str:
    parts = urlsplit(url)
    if not parts.query and not (strip_fragment and parts.fragment):
        return url
    kept = []
    for pair in parts.query.split("&") if parts.query else []:
        name, sep, _ = pair.partition("=")
        if parameters and name.lower() not in parameters:
            kept.append(pair)
        elif not strip:
            kept.append(f"{name}={mask}" if sep or name else pair)
    fragment = "" if strip_fragment else parts.fragment
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(kept), fragment))


def _mask_in(values, state) -> None:
    if not isinstance(values, dict):
        return
    for key in NAMES:
        if isinstance(values.get(key), str):
            values[key] = mask_url(
                values[key], state["parameters"], state["strip"], state["mask"], state["strip_fragment"]
            )


def process_event(event, meta):
    properties = event.get("properties")
    _mask_in(properties, meta.state)
    if isinstance(properties, dict):
        _mask_in(properties.get("$set"), meta.state)
        _mask_in(properties.get("$set_once"), meta.state)
    _mask_in(event.get("$set"), meta.state)
    _mask_in(event.get("$set_once"), meta.state)
    return event
