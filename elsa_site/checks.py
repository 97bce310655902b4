"""Project security checks (elsa_site.E0xx): insecure production settings fail `check --deploy`."""

from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Tags, register

ONE_YEAR = 31536000


def _production() -> bool:
    return getattr(settings, "ELSA_ENV", "development") == "production"


@register(Tags.security, deploy=True)
def check_production_settings(app_configs=None, **kwargs) -> list[Error]:
    errors: list[Error] = []
    multi_process = getattr(settings, "ELSA_WEB_CONCURRENCY", 1) > 1
    if (multi_process or _production()) and not getattr(settings, "CACHE_IS_SHARED", False):
        errors.append(
            Error(
                "A non-shared cache is configured for more than one process or for production.",
                hint="Set CACHE_URL=redis://...: rate limits, circuit breakers and locks need a shared cache.",
                id="elsa_site.E004",
            )
        )
    if not _production():
        return errors
    if settings.DEBUG:
        errors.append(Error("DEBUG is on in production.", hint="Unset ELSA_DEBUG.", id="elsa_site.E001"))
    if urlsplit(getattr(settings, "ELSA_PUBLIC_URL", "")).scheme != "https":
        errors.append(
            Error(
                "ELSA_PUBLIC_URL must be an https URL in production.",
                hint="Resume and approval links would travel in clear text.",
                id="elsa_site.E002",
            )
        )
    if "*" in getattr(settings, "CORS_ALLOWED_ORIGINS", []) or getattr(settings, "CORS_ALLOW_ALL_ORIGINS", False):
        errors.append(
            Error(
                "ELSA_CORS_ALLOWED_ORIGINS allows every origin in production.",
                hint="List the exact origins that may call the API.",
                id="elsa_site.E003",
            )
        )
    if not getattr(settings, "SECURE_SSL_REDIRECT", False):
        errors.append(Error("HTTPS redirect is off in production.", id="elsa_site.E005"))
    if getattr(settings, "SECURE_HSTS_SECONDS", 0) < ONE_YEAR or not getattr(
        settings, "SECURE_HSTS_INCLUDE_SUBDOMAINS", False
    ):
        errors.append(Error("HSTS must last at least one year and include subdomains.", id="elsa_site.E006"))
    if not (settings.SESSION_COOKIE_SECURE and settings.CSRF_COOKIE_SECURE and settings.SESSION_COOKIE_HTTPONLY):
        errors.append(Error("Session and CSRF cookies must be Secure (and the session HttpOnly).", id="elsa_site.E007"))
    if "*" in settings.ALLOWED_HOSTS:
        errors.append(Error("ELSA_ALLOWED_HOSTS must list host names, not '*'.", id="elsa_site.E008"))
    if getattr(settings, "ELSA_SIGNING_KEY", None) == settings.SECRET_KEY:
        errors.append(Error("ELSA_SIGNING_KEY must differ from ELSA_SECRET_KEY.", id="elsa_site.E009"))
    return errors
