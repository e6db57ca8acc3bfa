from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "greenpool.demo"
    label = "greenpool_demo"
    verbose_name = "greenpool demo"
    default_auto_field = "django.db.models.BigAutoField"
