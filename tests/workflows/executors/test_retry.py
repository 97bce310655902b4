"""The retry rules: which statuses are transient, and the backoff schedule (a pure function)."""

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from workflows.executors.retry import backoff_delay, is_transient_status, parse_retry_after


def test_backoff_is_1_2_4_8_seconds_then_gives_up_after_five_attempts():
    assert [backoff_delay(n) for n in range(5)] == [1.0, 2.0, 4.0, 8.0, None]


def test_backoff_scales_with_the_base():
    assert [backoff_delay(n, base=0.1) for n in range(4)] == pytest.approx([0.1, 0.2, 0.4, 0.8])


def test_jitter_spreads_the_delay_within_its_fraction():
    assert backoff_delay(2, jitter=0.25, uniform=lambda a, b: a) == pytest.approx(3.0)
    assert backoff_delay(2, jitter=0.25, uniform=lambda a, b: b) == pytest.approx(5.0)
    samples = {backoff_delay(1, jitter=0.5) for _ in range(50)}
    assert all(1.0 <= s <= 3.0 for s in samples) and len(samples) > 1


def test_retry_after_is_a_floor_and_is_capped():
    assert backoff_delay(0, retry_after=7) == 7
    assert backoff_delay(3, retry_after=2) == 8
    assert backoff_delay(0, retry_after=10_000, retry_after_max=60) == 60
    assert backoff_delay(4, retry_after=1) is None


def test_retry_after_parses_seconds_and_http_dates():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("5") == 5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 599])
def test_429_and_5xx_are_transient(status):
    assert is_transient_status(status)


@pytest.mark.parametrize("status", [200, 301, 400, 401, 403, 404, 409, 422])
def test_other_statuses_are_never_retried(status):
    assert not is_transient_status(status)
