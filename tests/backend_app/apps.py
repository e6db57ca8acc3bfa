from django.apps import AppConfig


class BackendAppConfig(AppConfig):
    name = "tests.backend_app"
    label = "backend_app"
    default_auto_field = "django.db.models.AutoField"
