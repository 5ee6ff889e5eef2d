from django.apps import AppConfig


class PluginsConfig(AppConfig):
    name = "bklog_app.plugins"
    label = "plugins"
    verbose_name = "Plugins"

    def ready(self) -> None:
        from bklog_app.plugins import signals  # noqa: F401 - connects the reload publishers
