"""Identity test fixtures: a clean verification cache and rate-limit counters for every test."""

import json

import pytest


@pytest.fixture(autouse=True)
def _clean_identity_state(request):
    from identity import invalidation, oidc

    # Subscribed before the test: the listener clears the cache when its subscription starts.
    invalidation.listener.ensure_started()
    if invalidation.redis_url():
        assert invalidation.listener.subscribed.wait(10), "identity invalidation listener did not subscribe"
    invalidation.cache.clear()
    oidc.jwks_cache_clear()
    if "django_db" in request.keywords or "transactional_db" in request.fixturenames:
        from django.core.cache import cache

        # Rate-limit counters start at zero. Only their keys: the same Redis database holds the
        # Celery broker's queues and bindings, which a flush would destroy under a live worker.
        if hasattr(cache, "delete_pattern"):
            cache.delete_pattern("rl:*")
        else:
            cache.clear()
    yield
    invalidation.cache.clear()


def audit_events(event_type: str):
    from tests.audit_log import chained_events

    return list(chained_events().filter(event_type=event_type).order_by("id"))


def event_text(event) -> str:
    """Everything an audit event stores, as one string, to assert a secret is not in it."""
    return json.dumps(
        [
            event.event_type,
            event.action,
            event.resource_type,
            event.resource_id,
            event.actor_id,
            event.actor_name,
            event.context,
            event.metadata,
        ],
        default=str,
    )
