"""App config of the audit app."""

from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"

    def ready(self):
        from audit import checks  # noqa: F401 - registers the system checks
