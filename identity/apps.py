"""Identity app: registers its checks, audits admin login failures, rate-limits the admin login."""

from django.apps import AppConfig


class IdentityConfig(AppConfig):
    name = "identity"

    def ready(self) -> None:
        from django.contrib import admin
        from django.contrib.auth.signals import user_login_failed

        from identity import checks, schema  # noqa: F401 - registers the checks and OpenAPI schemes
        from identity.admin_login import audit_admin_login_failure, protect_admin_login

        user_login_failed.connect(audit_admin_login_failure, dispatch_uid="identity.admin_login_failed")
        # Before the URLconf is loaded, so admin.site.urls picks the wrapped view.
        protect_admin_login(admin.site)
