"""Project app: registers the project-wide security checks."""

from django.apps import AppConfig


class ElsaSiteConfig(AppConfig):
    name = "elsa_site"
    verbose_name = "Elsa site"

    def ready(self) -> None:
        from elsa_site import checks  # noqa: F401 - registers the checks
