from django.apps import AppConfig


class BklogConfig(AppConfig):
    name = "bklog_app"
    label = "bklog_app"
    verbose_name = "bklog"

    def ready(self) -> None:
        # The OpenAPI extensions (bklog_app/api/schema.py) are registered by bklog_app/api/urls.py,
        # with the schema's views: a worker, which serves no API, then never imports DRF and
        # drf-spectacular (about 19 MB of each of its processes' RSS).
        from bklog_app import signals  # noqa: F401 - connects the receivers
