"""System checks of the executors app (security tag)."""

from django.conf import settings
from django.core.checks import Error, Tags, register


@register(Tags.security)
def check_breaker_settings(app_configs=None, **kwargs) -> list[Error]:
    """executors.E001: breaker and retry settings must be positive, or breakers never trip or never close."""
    errors = []
    for name in ("ELSA_BREAKER_FAIL_MAX", "ELSA_BREAKER_HALF_OPEN_PROBES"):
        if int(getattr(settings, name)) < 1:
            errors.append(Error(f"{name} must be at least 1.", id="executors.E001"))
    if float(settings.ELSA_BREAKER_RESET_SECONDS) <= 0:
        errors.append(Error("ELSA_BREAKER_RESET_SECONDS must be positive.", id="executors.E001"))
    return errors


@register(Tags.security)
def check_http_allowlist(app_configs=None, **kwargs) -> list[Error]:
    """executors.E002: a wildcard in the plain-HTTP allowlist would let production credentials travel in clear."""
    if settings.ELSA_ENV == "production" and any("*" in host for host in settings.ELSA_EXECUTOR_HTTP_ALLOWLIST):
        return [Error("ELSA_EXECUTOR_HTTP_ALLOWLIST may not contain wildcards in production.", id="executors.E002")]
    return []
