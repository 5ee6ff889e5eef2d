from django.apps import AppConfig


class BklogConfig(AppConfig):
    name = "bklog_app"
    label = "bklog_app"
    verbose_name = "bklog"

    def ready(self) -> None:
        from bklog_app import signals  # noqa: F401 - connects the receivers
        from bklog_app.api import schema  # noqa: F401 - registers the OpenAPI auth extension
