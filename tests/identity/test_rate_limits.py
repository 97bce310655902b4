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


ME = "/elsa/api/identity/me"


@pytest.fixture
def _api_key_rate(settings):
    settings.ELSA_API_KEY_FAILURE_RATE = "3/d"


def made_up_key(ip="10.0.4.1", client=None):
    from identity.apikeys import api_key_generate

    return client.get(ME, HTTP_X_API_KEY=api_key_generate().plaintext, REMOTE_ADDR=ip)


def queries_of(run) -> list[str]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        run()
    return [q["sql"] for q in captured.captured_queries if not q["sql"].upper().startswith(("SAVEPOINT", "RELEASE"))]


@pytest.mark.usefixtures("_api_key_rate")
def test_made_up_api_keys_are_limited_per_client_ip_without_a_query_and_audited_once_per_block(client):
    for _ in range(3):
        assert made_up_key(client=client).status_code == 401
    responses = []
    # The block's first refusal: its one audit event, and no key lookup.
    (audit_insert,) = queries_of(lambda: responses.append(made_up_key(client=client)))
    assert "audit" in audit_insert and "identity_apikey" not in audit_insert
    response = responses[0]
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"
    assert int(response["Retry-After"]) > 0
    # The flood after it: neither a lookup nor an audit event.
    assert queries_of(lambda: responses.extend(made_up_key(client=client) for _ in range(5))) == []
    assert [r.status_code for r in responses[1:]] == [429] * 5
    events = audit_events("identity.apikey.used-failed")
    assert [e.context.get("reason") for e in events] == ["invalid_api_key"] * 3 + ["rate_limited"]
    # Another client IP is not limited.
    assert made_up_key(ip="10.0.4.2", client=client).status_code == 401


@pytest.mark.usefixtures("_api_key_rate")
def test_good_api_keys_are_never_counted(client):
    from identity import invalidation
    from tests.identity.factories import application_with_key

    _, key = application_with_key("read:role")
    for _ in range(5):
        invalidation.cache.clear()  # each request looks the key up, as a fresh process would
        assert client.get(ME, HTTP_X_API_KEY=key, REMOTE_ADDR="10.0.5.1").status_code == 200
    assert made_up_key(ip="10.0.5.1", client=client).status_code == 401


@pytest.mark.usefixtures("_api_key_rate")
def test_a_blocked_ip_keeps_the_keys_this_process_verified_but_gets_429_for_any_other(client):
    from tests.identity.factories import application_with_key

    _, verified = application_with_key("read:role")
    _, unverified = application_with_key("read:role")
    assert client.get(ME, HTTP_X_API_KEY=verified, REMOTE_ADDR="10.0.6.1").status_code == 200
    for _ in range(3):
        assert made_up_key(ip="10.0.6.1", client=client).status_code == 401
    assert client.get(ME, HTTP_X_API_KEY=verified, REMOTE_ADDR="10.0.6.1").status_code == 200
    assert client.get(ME, HTTP_X_API_KEY=unverified, REMOTE_ADDR="10.0.6.1").status_code == 429
    assert client.get(ME, HTTP_X_API_KEY=unverified, REMOTE_ADDR="10.0.6.2").status_code == 200


def test_a_rate_django_ratelimit_cannot_read_is_refused_at_start_up(settings):
    from identity.checks import check_rates

    assert check_rates() == []
    settings.ELSA_API_KEY_FAILURE_RATE = "ten per minute"
    settings.ELSA_LOGIN_RATE = "5/0s"
    assert [e.id for e in check_rates()] == ["identity.E006", "identity.E006"]
