"""Per-client-IP rate limit of the anonymous resume endpoint and approval page (django-ratelimit)."""

from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches
from django_ratelimit import ALL
from django_ratelimit.core import EXPIRATION_FUDGE, _get_window, _make_cache_key, _split_rate

from audit.actors import client_ip

RESUME_GROUP = "bookmarks.resume"


def _client_ip_key(group: str, request) -> str:
    # X-Forwarded-For counts only through ELSA_TRUSTED_PROXY_COUNT proxies: a client cannot pick
    # a fresh IP per request to escape its limit.
    return client_ip(request) or "unknown"


@dataclass(frozen=True)
class RateDecision:
    limited: bool
    # True only for the first refused request of a window: that one is audited, the flood after it
    # is not, so a client hammering the endpoint cannot fill the audit log at our expense.
    first_refusal: bool


def _count(cache, key: str, period: int) -> int | None:
    """Increment the window's counter and return it (None if the cache failed).

    django-ratelimit's get_usage() does add() then incr(): two cache round trips on every request
    but the first of a window. Incrementing first takes one (an atomic EXISTS + INCRBY on Redis);
    only the first request of a window, whose counter does not exist yet, also adds it. Same key,
    same window, same expiry, so the count is the one django-ratelimit would keep.
    """
    try:
        return cache.incr(key)
    except ValueError:  # no counter yet in this window
        pass
    if cache.add(key, 1, period + EXPIRATION_FUDGE):
        return 1
    try:
        return cache.incr(key)  # another request added it meanwhile
    except ValueError:
        return None


def resume_rate_check(request) -> RateDecision:
    """Count this request against its client IP and say whether it is over ELSA_RESUME_RATE."""
    if not getattr(settings, "RATELIMIT_ENABLE", True):  # refused in production by bookmarks.E005
        return RateDecision(limited=False, first_refusal=False)
    # Read on use, so the setting can change per deployment (and per test) without a restart.
    rate = settings.ELSA_RESUME_RATE
    limit, period = _split_rate(rate)
    value = _client_ip_key(RESUME_GROUP, request)
    key = _make_cache_key(RESUME_GROUP, _get_window(value, period), rate, value, ALL)
    count = _count(caches[getattr(settings, "RATELIMIT_USE_CACHE", "default")], key, period)
    if count is None or count is False:
        # As django-ratelimit: a failing cache limits, unless RATELIMIT_FAIL_OPEN says otherwise.
        if getattr(settings, "RATELIMIT_FAIL_OPEN", False):
            return RateDecision(limited=False, first_refusal=False)
        return RateDecision(limited=True, first_refusal=False)
    limited = count > limit
    return RateDecision(limited=limited, first_refusal=limited and count == limit + 1)
