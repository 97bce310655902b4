"""Login, refresh rotation, logout and access-token verification through the HTTP API."""

import threading

import jwt
import pytest
from django.conf import settings
from django.db import connection

from tests.identity.conftest import audit_events, event_text
from tests.identity.factories import PASSWORD, RoleFactory, UserFactory, principal_headers

pytestmark = pytest.mark.django_db
LOGIN = "/elsa/api/identity/login"
REFRESH = "/elsa/api/identity/refresh-token"
LOGOUT = "/elsa/api/identity/logout"
ME = "/elsa/api/identity/me"


def login(client, username, password=PASSWORD):
    return client.post(LOGIN, {"username": username, "password": password}, "application/json")


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


@pytest.fixture
def user():
    return UserFactory(roles=[RoleFactory(permissions=["read:role", "read:user"])])


def test_login_issues_a_pair_with_the_documented_claims(client, user):
    response = login(client, user.username)
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) >= {"access_token", "refresh_token", "expires_in"}
    assert body["expires_in"] == 3600
    claims = jwt.decode(
        body["access_token"],
        settings.ELSA_SIGNING_KEY,
        algorithms=["HS256"],
        audience=settings.ELSA_JWT_AUDIENCE,
        issuer=settings.ELSA_JWT_ISSUER,
    )
    assert claims["sub"] == str(user.pk)
    assert claims["name"] == user.username
    assert claims["permissions"] == ["read:role", "read:user"]
    assert claims["exp"] - claims["iat"] == 3600
    refresh = jwt.decode(body["refresh_token"], options={"verify_signature": False})
    assert refresh["exp"] - refresh["iat"] == 7 * 86400
    assert audit_events("identity.login")[-1].result == "success"


def test_tokens_are_not_signed_with_the_django_secret_key(client, user):
    token = login(client, user.username).json()["access_token"]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, settings.SECRET_KEY, algorithms=["HS256"], audience=settings.ELSA_JWT_AUDIENCE)


def test_wrong_password_is_401_and_audited_without_the_password(client, user):
    response = login(client, user.username, "wrong password 123")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"
    assert "WWW-Authenticate" in response
    event = audit_events("identity.login")[-1]
    assert event.result == "failure" and "wrong password" not in event_text(event)


def test_unknown_user_is_401(client):
    assert login(client, "nobody").status_code == 401


def test_access_token_authenticates_without_a_database_query(client, user, django_assert_max_num_queries):
    token = login(client, user.username).json()["access_token"]
    assert client.get(ME, **bearer(token)).status_code == 200  # caches the user's enabled state
    with django_assert_max_num_queries(0):
        response = client.get(ME, **bearer(token))
    assert response.json() == {
        "type": "user",
        "id": str(user.pk),
        "name": user.username,
        "permissions": ["read:role", "read:user"],
    }


def test_permissions_claim_is_enforced(client, user):
    token = login(client, user.username).json()["access_token"]
    assert client.get("/elsa/api/identity/roles", **bearer(token)).status_code == 200
    assert client.get("/elsa/api/identity/applications", **bearer(token)).status_code == 403


def test_refresh_token_is_not_accepted_as_access_token(client, user):
    refresh = login(client, user.username).json()["refresh_token"]
    assert client.get(ME, **bearer(refresh)).status_code == 401


def test_access_token_is_not_accepted_as_refresh_token(client, user):
    access = login(client, user.username).json()["access_token"]
    assert client.post(REFRESH, {"refresh_token": access}, "application/json").status_code == 401


def test_refresh_rotates_and_a_reused_refresh_token_is_rejected(client, user):
    first = login(client, user.username).json()
    response = client.post(REFRESH, {"refresh_token": first["refresh_token"]}, "application/json")
    assert response.status_code == 200, response.content
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert client.get(ME, **bearer(second["access_token"])).status_code == 200
    reused = client.post(REFRESH, {"refresh_token": first["refresh_token"]}, "application/json")
    assert reused.status_code == 401


def test_reuse_of_a_refresh_token_revokes_its_whole_family(client, user):
    first = login(client, user.username).json()
    other_login = login(client, user.username).json()
    second = client.post(REFRESH, {"refresh_token": first["refresh_token"]}, "application/json").json()
    # A thief replays the first token: both it and the legitimate successor stop working.
    assert client.post(REFRESH, {"refresh_token": first["refresh_token"]}, "application/json").status_code == 401
    assert client.post(REFRESH, {"refresh_token": second["refresh_token"]}, "application/json").status_code == 401
    event = audit_events("identity.refresh")[-1]
    assert event.result == "failure" and event.context["reason"] == "reuse_detected"
    # Another login's family is untouched.
    assert client.post(REFRESH, {"refresh_token": other_login["refresh_token"]}, "application/json").status_code == 200


def test_refresh_picks_up_role_changes(client, user):
    pair = login(client, user.username).json()
    user.roles.add(RoleFactory(permissions=["read:application"]))
    new = client.post(REFRESH, {"refresh_token": pair["refresh_token"]}, "application/json").json()
    assert client.get("/elsa/api/identity/applications", **bearer(new["access_token"])).status_code == 200


def test_refresh_token_is_not_stored_in_the_database(client, user):
    from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

    refresh = login(client, user.username).json()["refresh_token"]
    assert not OutstandingToken.objects.filter(token=refresh).exists()
    assert OutstandingToken.objects.filter(jti=jwt.decode(refresh, options={"verify_signature": False})["jti"]).exists()


def test_logout_revokes_the_refresh_token(client, user):
    pair = login(client, user.username).json()
    response = client.post(
        LOGOUT, {"refresh_token": pair["refresh_token"]}, "application/json", **bearer(pair["access_token"])
    )
    assert response.status_code == 204, response.content
    assert client.post(REFRESH, {"refresh_token": pair["refresh_token"]}, "application/json").status_code == 401


def test_logout_revokes_the_refreshed_successors_too(client, user):
    pair = login(client, user.username).json()
    second = client.post(REFRESH, {"refresh_token": pair["refresh_token"]}, "application/json").json()
    response = client.post(
        LOGOUT, {"refresh_token": second["refresh_token"]}, "application/json", **bearer(second["access_token"])
    )
    assert response.status_code == 204
    assert client.post(REFRESH, {"refresh_token": second["refresh_token"]}, "application/json").status_code == 401


def test_logout_cannot_revoke_someone_elses_refresh_token(client, user):
    pair = login(client, user.username).json()
    response = client.post(LOGOUT, {"refresh_token": pair["refresh_token"]}, "application/json", **principal_headers())
    assert response.status_code == 400
    assert client.post(REFRESH, {"refresh_token": pair["refresh_token"]}, "application/json").status_code == 200


def test_disabled_user_is_refused_on_the_next_request(client, user):
    token = login(client, user.username).json()["access_token"]
    assert client.get(ME, **bearer(token)).status_code == 200
    admin = principal_headers("update:user")
    response = client.patch(f"/elsa/api/identity/users/{user.pk}", {"is_active": False}, "application/json", **admin)
    assert response.status_code == 200, response.content
    assert client.get(ME, **bearer(token)).status_code == 401


def test_disabled_user_cannot_log_in_or_refresh(client, user):
    pair = login(client, user.username).json()
    user.is_active = False
    user.save()
    assert login(client, user.username).status_code == 401
    assert client.post(REFRESH, {"refresh_token": pair["refresh_token"]}, "application/json").status_code == 401


def test_refresh_refused_for_a_disabled_account_is_audited_and_stays_revoked(client, user):
    pair = login(client, user.username).json()
    user.is_active = False
    user.save()
    assert client.post(REFRESH, {"refresh_token": pair["refresh_token"]}, "application/json").status_code == 401
    event = audit_events("identity.refresh")[-1]
    assert event.result == "failure" and event.context["reason"] == "account_disabled"
    # Enabled again, the user signs in anew: the token presented while disabled stays spent.
    user.is_active = True
    user.save()
    assert client.post(REFRESH, {"refresh_token": pair["refresh_token"]}, "application/json").status_code == 401


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda c: {**c, "aud": "someone-else"}, id="wrong-audience"),
        pytest.param(lambda c: {**c, "exp": c["iat"] - 10}, id="expired"),
        pytest.param(lambda c: {**c, "permissions": ["*"]}, id="tampered-permissions"),
    ],
)
def test_tampered_or_foreign_tokens_are_rejected(client, user, mutate):
    token = login(client, user.username).json()["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    key = "not-the-signing-key-" * 3 if mutate(claims).get("permissions") == ["*"] else settings.ELSA_SIGNING_KEY
    forged = jwt.encode(mutate(claims), key, algorithm="HS256")
    assert client.get(ME, **bearer(forged)).status_code == 401


def test_alg_none_token_is_rejected(client, user):
    token = login(client, user.username).json()["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.encode({**claims, "permissions": ["*"]}, None, algorithm="none")
    assert client.get(ME, **bearer(forged)).status_code == 401


@pytest.mark.postgres
def test_concurrent_reuse_of_one_refresh_token_succeeds_once(transactional_db, user):
    from django.test import Client

    refresh = login(Client(), user.username).json()["refresh_token"]
    statuses = []
    barrier = threading.Barrier(4)

    def use():
        barrier.wait()
        try:
            statuses.append(Client().post(REFRESH, {"refresh_token": refresh}, "application/json").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200, 401, 401, 401]


def test_expired_refresh_token_rows_are_flushed(client, user):
    from datetime import timedelta

    from django.utils import timezone
    from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

    from identity.tasks import identity_flush_expired_tokens

    login(client, user.username)
    OutstandingToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    live = login(client, user.username).json()["refresh_token"]
    assert identity_flush_expired_tokens() >= 1
    assert OutstandingToken.objects.count() == 1
    assert client.post(REFRESH, {"refresh_token": live}, "application/json").status_code == 200
