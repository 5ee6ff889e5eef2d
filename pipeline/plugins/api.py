"""The public plugin API: what plugin code may import (`from pipeline.plugins.api import RetryError`).

Source plugins find `RetryError` in their globals and may import this module too.
"""

__all__ = ["PluginTimeoutError", "RetryError"]


class RetryError(Exception):
    """Raise from a plugin method to ask for another attempt later.

    `on_event`: up to 5 attempts, 5, 10, 20 and 40 s apart; `export_events`: up to 3 retries
    after 6, 12 and 24 s; `setup_plugin`: up to 5 attempts. After the last attempt the work goes
    to the dead-letter store (and a failing `setup_plugin` disables the config).
    """


class PluginTimeoutError(RetryError):
    """A plugin method ran past PLUGIN_TIMEOUT_SECONDS. It counts as a RetryError."""
