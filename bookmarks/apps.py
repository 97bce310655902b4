from django.apps import AppConfig


class BookmarksConfig(AppConfig):
    name = "bookmarks"

    def ready(self) -> None:
        # Registers WaitForResume, the engine hook listeners and the security checks.
        from bookmarks import activities, checks, receivers  # noqa: F401
