"""App config of the executors app (label "executors")."""

from django.apps import AppConfig


class ExecutorsConfig(AppConfig):
    name = "workflows.executors"
    label = "executors"
    verbose_name = "Executors"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Importing these registers the system checks and the HttpRequest activity type.
        from workflows.executors import activities, checks  # noqa: F401
