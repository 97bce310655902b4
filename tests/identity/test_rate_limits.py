"""Brute force: login, identity/token and the admin login are limited per client IP and per subject."""

import pytest

from tests.identity.conftest import audit_events
from tests.identity.factories import PASSWORD, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.redis]
LOGIN = "/elsa/api/identity/login"


@pytest.fixture(autouse=True)
def _rate(settings):
    settings.ELSA_LOGIN_RATE = "3/d"  # day window: no boundary inside the test


def login(client, username, password="wrong password!", ip="10.0.0.1"):  # noqa: S107
    return client.post(LOGIN, {"username": username, "password": password}, "application/json", REMOTE_ADDR=ip)


def test_login_is_limited_per_username_across_ips(client):
    user = UserFactory()
    for i in range(3):
        assert login(client, user.username, ip=f"10.0.1.{i}").status_code == 401
    response = login(client, user.username, PASSWORD, ip="10.0.1.99")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"
    reasons = [e.context.get("reason") for e in audit_events("identity.login")]
    assert reasons == ["invalid_credentials"] * 3 + ["rate_limited"]


def test_login_is_limited_per_ip_across_usernames(client):
    for i in range(3):
        assert login(client, f"someone-{i}").status_code == 401
    assert login(client, "someone-else").status_code == 429
    # Another client IP, another username: not limited.
    assert login(client, "fresh", ip="10.9.9.9").status_code == 401


def test_token_endpoint_is_limited_per_client_id(client):
    def attempt(ip):
        return client.post(
            "/elsa/api/identity/token",
            {"grant_type": "client_credentials", "client_id": "app_x", "client_secret": "bad"},
            "application/json",
            REMOTE_ADDR=ip,
        )

    for i in range(3):
        assert attempt(f"10.0.2.{i}").status_code == 401
    response = attempt("10.0.2.99")
    assert response.status_code == 429 and response.json()["error"] == "slow_down"
    assert [e.context.get("reason") for e in audit_events("identity.token")][-1] == "rate_limited"


def test_admin_login_is_limited_and_failures_are_audited(client):
    user = UserFactory(is_staff=True)
    for i in range(3):
        response = client.post(
            "/admin/login/", {"username": user.username, "password": "wrong password!"}, REMOTE_ADDR=f"10.0.3.{i}"
        )
        assert response.status_code == 200  # the form again, with an error
    response = client.post("/admin/login/", {"username": user.username, "password": PASSWORD}, REMOTE_ADDR="10.0.3.9")
    assert response.status_code == 429
    reasons = [e.context.get("reason") for e in audit_events("identity.admin-login")]
    assert reasons == ["invalid_credentials"] * 3 + ["rate_limited"]
    assert all("wrong password" not in str(e.context) for e in audit_events("identity.admin-login"))
