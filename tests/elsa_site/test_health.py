import pytest
from django.test import override_settings

pytestmark = pytest.mark.django_db


def test_live_answers_anonymously(client):
    response = client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.redis
def test_ready_reports_every_check_ok(client):
    response = client.get("/health/ready")
    body = response.json()
    assert response.status_code == 200, body
    assert set(body["checks"]) == {"database", "cache", "broker"}
    assert all(check["status"] == "ok" and check["latency_ms"] >= 0 for check in body["checks"].values())


def test_ready_is_503_naming_an_unreachable_broker(client, settings):
    from elsa_site.celery import app

    # Port 9 on loopback has no listener: a really unreachable broker, not a mock.
    original = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:9/0"
    try:
        response = client.get("/health/ready")
    finally:
        app.conf.broker_url = original
    body = response.json()
    assert response.status_code == 503
    assert body["failing"] == ["broker"]
    assert body["checks"]["broker"]["status"] == "error"
    assert "127.0.0.1" not in response.content.decode()


def test_ready_is_503_naming_an_unreachable_cache(client):
    unreachable = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }
    # override_settings closes and replaces the cache connections on entry and exit.
    with override_settings(CACHES=unreachable):
        response = client.get("/health/ready")
    assert response.status_code == 503
    assert "cache" in response.json()["failing"]
    assert "127.0.0.1" not in response.content.decode()


@pytest.mark.postgres
def test_ready_is_503_naming_an_unreachable_database(client, settings):
    from django.db import connections

    conn = connections["default"]
    original = conn.settings_dict["PORT"]
    conn.close()
    conn.settings_dict["PORT"] = 9
    try:
        response = client.get("/health/ready")
    finally:
        conn.close()
        conn.settings_dict["PORT"] = original
    assert response.status_code == 503
    assert "database" in response.json()["failing"]
