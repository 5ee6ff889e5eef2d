"""Settings read on a per-event path, read once per process.

A read of `django.conf.settings` goes through Django's lazy proxy: about a microsecond, which on
the ingestion path is paid per plugin call (twice per event for a two-plugin chain). `get` keeps
each value after its first read; a settings change (`override_settings` in tests, which sends
`setting_changed`) forgets them all.
"""

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

_values: dict[str, Any] = {}


def get(name: str) -> Any:
    try:
        return _values[name]
    except KeyError:
        value = _values[name] = getattr(settings, name)
        return value


@receiver(setting_changed)
def _forget(**_kwargs: Any) -> None:
    _values.clear()
