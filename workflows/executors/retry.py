"""Which failures are retried, and when: exponential backoff 1, 2, 4, 8 s with jitter, honouring Retry-After."""

import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def is_transient_status(status: int) -> bool:
    """429 and every 5xx may succeed later; any other 4xx is the request's fault and never retried."""
    return status == 429 or 500 <= status <= 599


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def backoff_delay(
    failed_attempt: int,
    *,
    max_attempts: int = 5,
    base: float = 1.0,
    jitter: float = 0.0,
    retry_after: float | None = None,
    retry_after_max: float = 300.0,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float | None:
    """Seconds before the next attempt after attempt number `failed_attempt` (0-based) failed.

    None when that was the last of `max_attempts`. The delay is base * 2**failed_attempt
    (1, 2, 4, 8 s with base 1), spread by +/- `jitter` (a fraction) so that callers failing
    together do not retry together; a Retry-After from the server is a floor, capped at
    `retry_after_max`.
    """
    if failed_attempt + 1 >= max_attempts:
        return None
    delay = base * (2**failed_attempt)
    if jitter:
        delay *= 1.0 + uniform(-jitter, jitter)
    if retry_after is not None:
        delay = max(delay, min(retry_after, retry_after_max))
    return max(0.0, delay)
