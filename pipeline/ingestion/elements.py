"""Autocapture elements: `$elements` (a list of dicts) <-> `elements_chain` (one string).

The chain is PostHog's format, one element per `;`, innermost first:
`tag.class1.class2:attr__id="x"href="/a"nth-child="1"nth-of-type="1"text="Buy"attr_id="x"`.
"""

import re

_SPLIT = re.compile(r";(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)")
_ATTR = re.compile(r'(?P<key>[\w\-]+)="(?P<value>(?:\\"|[^"])*)"')


def _escape(value) -> str:
    return str(value).replace('"', '\\"')


# posthog-js's `$elements` (sent when the SDK is not told to send `$elements_chain` itself): the
# element's text as `$el_text`, and its HTML attributes as `attr__<name>`, of which `attr__href`,
# `attr__id` and `attr__class` are also the element's href, id and classes. Limits as PostHog's.
MAX_TEXT, MAX_HREF = 400, 2048


def elements_to_chain(elements: list) -> str:
    parts = []
    for element in elements:
        if not isinstance(element, dict):
            continue
        tag = str(element.get("tag_name") or "")
        classes = element.get("attr_class") or element.get("classes") or element.get("attr__class") or []
        if isinstance(classes, str):
            classes = classes.split()
        head = tag + "".join(f".{c}" for c in classes if c)
        attrs = {}
        fields = {
            "text": _first(element, "text", "$el_text", limit=MAX_TEXT),
            "href": _first(element, "href", "attr__href", limit=MAX_HREF),
            "attr_id": _first(element, "attr_id", "attr__id"),
            "nth-child": element.get("nth_child"),
            "nth-of-type": element.get("nth_of_type"),
        }
        attrs.update((key, value) for key, value in fields.items() if value is not None)
        attributes = element.get("attributes") or {k: v for k, v in element.items() if k.startswith("attr__")}
        for key, value in attributes.items():
            attrs[key] = value
        parts.append(head + ":" + "".join(f'{k}="{_escape(v)}"' for k, v in sorted(attrs.items())))
    return ";".join(parts)


def _first(element: dict, *keys: str, limit: int | None = None):
    for key in keys:
        value = element.get(key)
        if value is not None and value != "":
            return str(value)[:limit] if limit else value
    return None


def chain_to_elements(chain: str) -> list[dict]:
    elements = []
    for order, part in enumerate(p for p in _SPLIT.split(chain or "") if p):
        head, _, rest = part.partition(":")
        tag, *classes = head.split(".")
        element = {
            "tag_name": tag,
            "attr_class": classes or None,
            "text": None,
            "href": None,
            "attr_id": None,
            "nth_child": None,
            "nth_of_type": None,
            "attributes": {},
            "order": order,
        }
        for match in _ATTR.finditer(rest):
            key, value = match["key"], match["value"].replace('\\"', '"')
            if key in ("nth-child", "nth-of-type"):
                element[key.replace("-", "_")] = int(value) if value.isdigit() else None
            elif key in ("text", "href", "attr_id"):
                element[key] = value
            else:
                element["attributes"][key] = value
        elements.append(element)
    return elements
