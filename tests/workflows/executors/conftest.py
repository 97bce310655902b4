"""Fixtures for executor tests: executors created through the service, pointed at local servers."""

import pytest

from audit.actors import Actor


@pytest.fixture(autouse=True)
def _fresh_executor_cache():
    # Test servers listen on ephemeral ports, which get reused: a discovery document or token cached
    # for an earlier server at the same URL must not answer for this test's server.
    from django.core.cache import cache

    if hasattr(cache, "delete_pattern"):
        cache.delete_pattern("executors:*")
    else:
        cache.clear()


@pytest.fixture
def actor():
    return Actor(type="user", id="tester", name="tester", ip="127.0.0.1")


@pytest.fixture
def make_executor(actor):
    """Create an executor through the service; test servers listen on 127.0.0.1, hence internal=True."""
    from workflows.executors.services import executor_create

    counter = {"n": 0}

    def factory(base_url, *, endpoints=None, authentication=None, tls=None, internal=True, name=None):
        counter["n"] += 1
        data = {
            "name": name or f"partner-{counter['n']}",
            "base_url": base_url,
            "endpoints": endpoints
            or [
                {"name": "analyze", "path": "/v1/analyze", "method": "POST", "timeout": 5},
                {"name": "item", "path": "/v1/items/{id}", "method": "GET", "timeout": 5},
            ],
        }
        if authentication is not None:
            data["authentication"] = authentication
        if tls is not None:
            data["tls"] = tls
        return executor_create(data=data, actor=actor, internal=internal)

    return factory
