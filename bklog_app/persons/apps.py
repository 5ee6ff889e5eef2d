from django.apps import AppConfig


class PersonsConfig(AppConfig):
    name = "bklog_app.persons"
    label = "persons"
    verbose_name = "Persons"
