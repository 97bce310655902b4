"""Project app: registers the project-wide security checks and freezes the start-up heap."""

from django.apps import AppConfig


class ElsaSiteConfig(AppConfig):
    name = "elsa_site"
    verbose_name = "Elsa site"

    def ready(self) -> None:
        from elsa_site import checks  # noqa: F401 - registers the checks
        from elsa_site.heap import freeze_startup_heap

        # The last installed app: every other app's ready() has run, the heap is built.
        freeze_startup_heap()
