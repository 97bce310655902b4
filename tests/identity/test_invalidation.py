"""The process-local verification cache: tags, generations, and the fallback lifetime without push."""

import pytest

from identity.invalidation import VerificationCache
from tests.conftest import wait_until


def test_invalidating_a_tag_drops_only_the_entries_carrying_it():
    cache = VerificationCache()
    cache.put("a", 1, tags={"application:1"}, if_generation=cache.generation)
    cache.put("b", 2, tags={"application:2"}, if_generation=cache.generation)
    cache.invalidate({"application:1"})
    assert cache.get("a") is None and cache.get("b") == 2


def test_a_value_read_before_an_invalidation_is_not_cached():
    cache = VerificationCache()
    generation = cache.generation
    cache.invalidate({"user:1"})  # arrives while the database read was in flight
    cache.put("state:user:1", True, tags={"user:1"}, if_generation=generation)
    assert cache.get("state:user:1") is None


def test_without_push_entries_live_only_the_fallback_time(settings):
    settings.ELSA_IDENTITY_CACHE_FALLBACK_SECONDS = 0.2
    cache = VerificationCache()
    cache.push_healthy = False
    cache.put("k", "v", tags=set(), if_generation=cache.generation)
    assert cache.get("k") == "v"
    wait_until(lambda: cache.get("k") is None, timeout=2, message="fallback expiry")


def test_with_push_entries_live_the_long_lifetime(settings):
    settings.ELSA_IDENTITY_CACHE_SECONDS = 300
    settings.ELSA_IDENTITY_CACHE_FALLBACK_SECONDS = 0.01
    cache = VerificationCache()
    cache.push_healthy = True
    cache.put("k", "v", tags=set(), if_generation=cache.generation)
    import time

    deadline = time.monotonic() + 0.1
    while time.monotonic() < deadline:
        assert cache.get("k") == "v"


@pytest.mark.redis
def test_a_published_invalidation_reaches_this_process_listener(transactional_db):
    from identity import invalidation

    invalidation.cache.put("apikey:probe", "x", tags={"apikey:probe"}, if_generation=invalidation.cache.generation)
    # Published as another process would: straight to Redis, not through the local drop.
    import json

    import redis

    client = redis.Redis.from_url(invalidation.redis_url())
    client.publish(invalidation.channel_name(), json.dumps({"tags": ["apikey:probe"]}))
    client.close()
    wait_until(lambda: invalidation.cache.get("apikey:probe") is None, timeout=1, message="pushed invalidation")
