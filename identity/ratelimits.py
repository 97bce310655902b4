"""Per-client-IP limit of failed API key attempts, with django-ratelimit on the shared cache."""

from dataclasses import dataclass

from django.conf import settings
from django_ratelimit.core import get_usage

from audit.actors import client_ip

FAILURES_GROUP = "identity.apikey-failures"
# Counts the refused requests of a block in the same window as the failures (same key, same
# period): the first of them is audited, the flood after it is not.
REFUSALS_GROUP = "identity.apikey-refused"


@dataclass(frozen=True)
class ApiKeyBlock:
    """A client IP over its failed API key attempts: refused with 429 until the window ends."""

    first_refusal: bool
    retry_after: int  # seconds until the window ends


def _usage(request, group: str, *, increment: bool) -> dict | None:
    django_request = getattr(request, "_request", request)
    # X-Forwarded-For counts only through ELSA_TRUSTED_PROXY_COUNT proxies: a client cannot pick a
    # fresh IP per request to escape its limit.
    ip = client_ip(django_request) or "unknown"
    return get_usage(
        django_request,
        group=group,
        key=lambda group, request: ip,
        rate=settings.ELSA_API_KEY_FAILURE_RATE,
        increment=increment,
    )


def api_key_block(request) -> ApiKeyBlock | None:
    """The block on this client IP if it has had ELSA_API_KEY_FAILURE_RATE failed API keys this window."""
    # Looked at, not counted: only failures count, so a client that keeps using a good key is never limited.
    failures = _usage(request, FAILURES_GROUP, increment=False)
    if failures is None:  # RATELIMIT_ENABLE off (refused in production by bookmarks.E005)
        return None
    # A cache that fails answers count 0 and limit 0: blocked, as django-ratelimit does for the logins,
    # unless RATELIMIT_FAIL_OPEN.
    if failures["count"] < failures["limit"]:
        return None
    refusals = _usage(request, REFUSALS_GROUP, increment=True)
    return ApiKeyBlock(
        first_refusal=refusals is not None and refusals["count"] == 1,
        retry_after=max(int(failures["time_left"]), 1),
    )


def api_key_failure_count(request) -> None:
    """Count one failed API key attempt against the client IP."""
    _usage(request, FAILURES_GROUP, increment=True)
