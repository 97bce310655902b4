"""Security checks of the bookmarks settings (bookmarks.E0xx)."""

import re
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Tags, register

# django-ratelimit's grammar: "<count>/<multiplier?><s|m|h|d>", e.g. "100/m" or "5/10s".
_RATE = re.compile(r"^[1-9]\d*/\d*[smhd]$")


@register(Tags.security)
def check_bookmark_settings(app_configs=None, **kwargs) -> list[Error]:
    errors: list[Error] = []
    if not _RATE.match(str(getattr(settings, "ELSA_RESUME_RATE", ""))):
        errors.append(
            Error(
                "ELSA_RESUME_RATE is not a rate like '100/m'.",
                hint="The anonymous resume endpoint must be rate limited per client IP.",
                id="bookmarks.E001",
            )
        )
    max_failures = getattr(settings, "ELSA_RESUME_MAX_FAILURES", 0)
    if not isinstance(max_failures, int) or max_failures < 1:
        errors.append(
            Error(
                "ELSA_RESUME_MAX_FAILURES must be a positive integer.",
                hint="Without it a token holder could probe the input schema forever.",
                id="bookmarks.E002",
            )
        )
    default_ttl = getattr(settings, "ELSA_BOOKMARK_DEFAULT_TTL_SECONDS", 0)
    max_ttl = getattr(settings, "ELSA_BOOKMARK_MAX_TTL_SECONDS", 0)
    if not (isinstance(default_ttl, int) and isinstance(max_ttl, int) and 0 < default_ttl <= max_ttl):
        errors.append(
            Error(
                "ELSA_BOOKMARK_DEFAULT_TTL_SECONDS must be positive and at most ELSA_BOOKMARK_MAX_TTL_SECONDS.",
                hint="Resume tokens must always expire.",
                id="bookmarks.E003",
            )
        )
    public = urlsplit(str(getattr(settings, "ELSA_PUBLIC_URL", "")))
    if public.scheme not in {"http", "https"} or not public.netloc or public.query or public.fragment:
        errors.append(
            Error(
                "ELSA_PUBLIC_URL must be an absolute http(s) base URL without query or fragment.",
                hint="Resume and approval links are built from it.",
                id="bookmarks.E004",
            )
        )
    if getattr(settings, "ELSA_ENV", "development") == "production" and not getattr(settings, "RATELIMIT_ENABLE", True):
        errors.append(
            Error(
                "RATELIMIT_ENABLE is off in production.",
                hint="The anonymous resume endpoint would accept unlimited guesses.",
                id="bookmarks.E005",
            )
        )
    return errors
