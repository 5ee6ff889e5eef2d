from django.apps import AppConfig


class ExportsConfig(AppConfig):
    name = "bklog_app.exports"
    label = "exports"
    verbose_name = "Exports"
