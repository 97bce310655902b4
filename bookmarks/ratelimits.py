"""Per-client-IP rate limit of the anonymous resume endpoint and approval page (django-ratelimit)."""

from dataclasses import dataclass

from django.conf import settings
from django_ratelimit.core import get_usage

from audit.actors import client_ip

RESUME_GROUP = "bookmarks.resume"


def _client_ip_key(group: str, request) -> str:
    # X-Forwarded-For counts only through ELSA_TRUSTED_PROXY_COUNT proxies: a client cannot pick
    # a fresh IP per request to escape its limit.
    return client_ip(request) or "unknown"


def _resume_rate(group: str, request) -> str:
    # Read on use, so the setting can change per deployment (and per test) without a restart.
    return settings.ELSA_RESUME_RATE


@dataclass(frozen=True)
class RateDecision:
    limited: bool
    # True only for the first refused request of a window: that one is audited, the flood after it
    # is not, so a client hammering the endpoint cannot fill the audit log at our expense.
    first_refusal: bool


def resume_rate_check(request) -> RateDecision:
    """Count this request against its client IP and say whether it is over ELSA_RESUME_RATE."""
    usage = get_usage(request, group=RESUME_GROUP, key=_client_ip_key, rate=_resume_rate, increment=True)
    if usage is None:  # RATELIMIT_ENABLE is off (refused in production by bookmarks.E005)
        return RateDecision(limited=False, first_refusal=False)
    limited = bool(usage["should_limit"])
    return RateDecision(limited=limited, first_refusal=limited and usage["count"] == usage["limit"] + 1)
