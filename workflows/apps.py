"""App configuration of the workflows engine."""

from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"

    def ready(self) -> None:
        # Registers the core activity types; other apps register theirs from their own ready().
        from workflows import checks  # noqa: F401
        from workflows.activities import core  # noqa: F401
