from django.apps import AppConfig


class PrivacyConfig(AppConfig):
    name = "bklog_app.privacy"
    label = "privacy"
    verbose_name = "Privacy"
