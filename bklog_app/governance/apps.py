from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    name = "bklog_app.governance"
    label = "governance"
    verbose_name = "Data governance"

    def ready(self) -> None:
        from bklog_app.governance import signals  # noqa: F401 - connects the plan cache invalidation
