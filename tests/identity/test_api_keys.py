"""API keys through the HTTP API: formats, hashing, failures audited, disable, rotation, expiry."""

from datetime import timedelta

import pytest
from django.utils import timezone

from identity.apikeys import api_key_hash, api_key_parse
from identity.models import ApiKey
from tests.conftest import wait_until
from tests.identity.conftest import audit_events, event_text
from tests.identity.factories import application_with_key, principal_headers

pytestmark = pytest.mark.django_db
ME = "/elsa/api/identity/me"


def test_api_key_in_authorization_header_authenticates_the_application(client):
    application, key = application_with_key("read:role")
    response = client.get(ME, HTTP_AUTHORIZATION=f"ApiKey {key}")
    assert response.status_code == 200
    assert response.json() == {
        "type": "application",
        "id": str(application.pk),
        "name": application.name,
        "permissions": ["read:role"],
    }


def test_api_key_in_x_api_key_header_authenticates(client):
    _, key = application_with_key("read:role")
    assert client.get(ME, HTTP_X_API_KEY=key).status_code == 200


def test_key_embeds_its_id_carries_256_bits_and_only_a_keyed_hash_is_stored():
    application, key = application_with_key()
    key_id, secret = api_key_parse(key)
    stored = ApiKey.objects.get(application=application)
    assert stored.key_id == key_id
    assert len(secret) >= 43  # token_urlsafe(32): 32 random bytes
    assert secret not in stored.key_hash and key not in str(stored.__dict__)
    assert stored.key_hash == api_key_hash(secret, stored.salt)


def test_wrong_key_is_401_and_audited_without_the_key(client):
    _, key = application_with_key("read:role")
    key_id, secret = api_key_parse(key)
    forged = f"elsa_{key_id}_{'A' * len(secret)}"
    response = client.get(ME, HTTP_AUTHORIZATION=f"ApiKey {forged}")
    assert response.status_code == 401
    assert "ApiKey" in response["WWW-Authenticate"]
    assert forged not in response.content.decode()
    events = audit_events("identity.apikey.used-failed")
    assert len(events) == 1
    assert events[0].result == "failure" and events[0].resource_id == key_id
    assert forged not in event_text(events[0]) and "A" * 20 not in event_text(events[0])


def test_malformed_key_is_401_and_audited(client):
    response = client.get(ME, HTTP_X_API_KEY="not-a-key")
    assert response.status_code == 401
    assert len(audit_events("identity.apikey.used-failed")) == 1
    assert "not-a-key" not in event_text(audit_events("identity.apikey.used-failed")[0])


def test_disabled_application_is_refused_on_the_next_request(client):
    application, key = application_with_key("read:role")
    admin = principal_headers("update:application")
    assert client.get(ME, HTTP_X_API_KEY=key).status_code == 200  # now cached in this process
    response = client.post(f"/elsa/api/identity/applications/{application.pk}/disable", **admin)
    assert response.status_code == 200, response.content
    assert response.json()["enabled"] is False
    assert client.get(ME, HTTP_X_API_KEY=key).status_code == 401


def test_rotation_without_grace_stops_the_old_key_at_once(client):
    application, key = application_with_key("read:role")
    admin = principal_headers("update:application", "read:role")
    assert client.get(ME, HTTP_X_API_KEY=key).status_code == 200
    response = client.post(f"/elsa/api/identity/applications/{application.pk}/rotate", {}, "application/json", **admin)
    assert response.status_code == 200, response.content
    new_key = response.json()["api_key"]
    assert response["Cache-Control"] == "no-store"
    assert client.get(ME, HTTP_X_API_KEY=key).status_code == 401
    assert client.get(ME, HTTP_X_API_KEY=new_key).status_code == 200


def test_rotation_with_grace_keeps_the_old_key_until_the_chosen_time(client):
    application, key = application_with_key("read:role")
    admin = principal_headers("update:application", "read:role")
    response = client.post(
        f"/elsa/api/identity/applications/{application.pk}/rotate",
        {"grace_seconds": 3600},
        "application/json",
        **admin,
    )
    new_key = response.json()["api_key"]
    assert client.get(ME, HTTP_X_API_KEY=key).status_code == 200
    assert client.get(ME, HTTP_X_API_KEY=new_key).status_code == 200
    old = ApiKey.objects.get(key_id=api_key_parse(key)[0])
    assert old.expires_at is not None and old.expires_at > timezone.now() + timedelta(minutes=59)


def test_key_past_its_grace_period_is_refused_even_when_cached(client):
    _, key = application_with_key("read:role")
    ApiKey.objects.filter(key_id=api_key_parse(key)[0]).update(expires_at=timezone.now() + timedelta(seconds=1))
    assert client.get(ME, HTTP_X_API_KEY=key).status_code == 200
    # The cached entry carries the key's expiry: no invalidation is needed for time to pass.
    wait_until(lambda: client.get(ME, HTTP_X_API_KEY=key).status_code == 401, timeout=3, message="key expiry")


def test_expired_application_is_refused(client):
    _, key = application_with_key("read:role", expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get(ME, HTTP_X_API_KEY=key).status_code == 401


def test_last_used_at_is_written_at_most_once_a_minute(client, django_assert_max_num_queries):
    application, key = application_with_key("read:role")
    assert client.get(ME, HTTP_X_API_KEY=key).status_code == 200
    application.refresh_from_db()
    first = application.last_used_at
    assert first is not None
    # Cached and recently written: the next requests query nothing at all.
    with django_assert_max_num_queries(0):
        for _ in range(5):
            assert client.get(ME, HTTP_X_API_KEY=key).status_code == 200
    application.refresh_from_db()
    assert application.last_used_at == first


def test_a_refused_key_never_reaches_the_logs(client, caplog):
    _, key = application_with_key("read:role")
    key_id, secret = api_key_parse(key)
    wrong = f"elsa_{key_id}_{secret[::-1]}"
    with caplog.at_level("DEBUG"):
        assert client.get(ME, HTTP_X_API_KEY=wrong).status_code == 401
    assert secret[::-1] not in caplog.text and secret not in caplog.text
