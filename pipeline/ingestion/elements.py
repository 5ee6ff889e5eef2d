"""Autocapture elements: `$elements` (a list of dicts) <-> `elements_chain` (one string).

The chain is PostHog's format, one element per `;`, innermost first:
`tag.class1.class2:attr__id="x"href="/a"nth-child="1"nth-of-type="1"text="Buy"attr_id="x"`.
"""

import re

_SPLIT = re.compile(r";(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)")
_ATTR = re.compile(r'(?P<key>[\w\-]+)="(?P<value>(?:\\"|[^"])*)"')


def _escape(value) -> str:
    return str(value).replace('"', '\\"')


def elements_to_chain(elements: list) -> str:
    parts = []
    for element in elements:
        if not isinstance(element, dict):
            continue
        tag = str(element.get("tag_name") or "")
        classes = element.get("attr_class") or element.get("classes") or []
        if isinstance(classes, str):
            classes = classes.split()
        head = tag + "".join(f".{c}" for c in classes if c)
        attrs = {}
        for key in ("href", "text", "attr_id"):
            if element.get(key) is not None:
                attrs[key] = element[key]
        if element.get("nth_child") is not None:
            attrs["nth-child"] = element["nth_child"]
        if element.get("nth_of_type") is not None:
            attrs["nth-of-type"] = element["nth_of_type"]
        for key, value in sorted((element.get("attributes") or {}).items()):
            attrs[key] = value
        parts.append(head + ":" + "".join(f'{k}="{_escape(v)}"' for k, v in sorted(attrs.items())))
    return ";".join(parts)


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
