"""Standardise event names: "Signed Up", "signed-up", "signedUp" all become one form."""

import re
from types import MappingProxyType

_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|[^A-Za-z0-9]+")


def words(name):
    return [word.lower() for word in _BOUNDARY.split(name) if word]


CONVENTIONS = MappingProxyType(
    {
        "camelCase": lambda w: w[0] + "".join(x.capitalize() for x in w[1:]),
        "PascalCase": lambda w: "".join(x.capitalize() for x in w),
        "snake_case": lambda w: "_".join(w),
        "kebab-case": lambda w: "-".join(w),
        "spaces in between": lambda w: " ".join(w),
    }
)


def standardise(name, convention):
    parts = words(name)
    return CONVENTIONS[convention](parts) if parts else name


def process_event(event, meta):
    """The event under its standard name, as a new event; the one given is left as it was
    (plugin.json says so, and the chain relies on it)."""
    name = event.get("event")
    if not isinstance(name, str) or name.startswith("$"):
        return event
    standard = standardise(name, meta.config.get("naming_convention", "camelCase"))
    return event if standard == name else {**event, "event": standard}
