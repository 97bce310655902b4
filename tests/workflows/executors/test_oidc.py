"""OIDC authentication against a local issuer (discovery + token endpoint) that counts token requests."""

import threading
import time
from urllib.parse import parse_qs

import pytest

from tests.workflows.executors.servers import OidcIssuer, serve
from tests.workflows.executors.workers import call_workers
from workflows.executors import oidc
from workflows.executors.client import PermanentError
from workflows.executors.credentials import executor_secrets
from workflows.executors.services import executor_call


@pytest.fixture
def issuer():
    issuer = OidcIssuer()
    with serve(issuer.respond) as state:
        issuer.state = state
        yield issuer


@pytest.fixture
def partner(issuer):
    def respond(recorded):
        token = recorded.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in issuer.valid_tokens():
            return 401, {}, {"error": "invalid_token"}
        return 200, {}, {"ok": True}

    with serve(respond) as state:
        yield state


def client_credentials(issuer, **extra):
    config = {"issuer": issuer.state.url, "client_id": issuer.client_id, "client_secret": issuer.client_secret}
    return {"type": "oidc_client_credentials", "config": {**config, **extra}}


def token_requests(issuer) -> int:
    return issuer.state.count("/token")


@pytest.mark.django_db
def test_client_credentials_with_client_secret_basic(issuer, partner, make_executor, actor):
    auth = client_credentials(issuer, scopes=["fraud.read", "fraud.write"], audience="https://partner.example")
    executor = make_executor(partner.url, authentication=auth)
    assert executor_call(executor=executor, endpoint="analyze", actor=actor).status == 200
    issued = issuer.issued[-1]
    assert issued["basic"] and "client_secret" not in issued["form"]
    assert issued["form"]["grant_type"] == "client_credentials"
    assert issued["form"]["scope"] == "fraud.read fraud.write"
    assert issued["form"]["audience"] == "https://partner.example"
    assert issuer.state.count("/.well-known/openid-configuration") == 1


@pytest.mark.django_db
def test_client_credentials_with_client_secret_post(issuer, partner, make_executor, actor):
    executor = make_executor(
        partner.url, authentication=client_credentials(issuer, token_endpoint_auth_method="client_secret_post")
    )
    assert executor_call(executor=executor, endpoint="analyze", actor=actor).status == 200
    issued = issuer.issued[-1]
    assert not issued["basic"] and issued["form"]["client_secret"] == issuer.client_secret


@pytest.mark.django_db
def test_token_is_cached_until_shortly_before_expiry(issuer, partner, make_executor, actor, settings):
    executor = make_executor(partner.url, authentication=client_credentials(issuer))
    for _ in range(3):
        assert executor_call(executor=executor, endpoint="analyze", actor=actor).status == 200
    assert token_requests(issuer) == 1


@pytest.mark.django_db
def test_token_near_expiry_is_not_reused(issuer, partner, make_executor, actor, settings):
    # expires_in 2 s with a 30 s margin: cached for half its life (1 s) at most, then fetched again.
    issuer.expires_in = 2
    executor = make_executor(partner.url, authentication=client_credentials(issuer))
    executor_call(executor=executor, endpoint="analyze", actor=actor)
    from django.core.cache import cache

    from tests.conftest import wait_until

    key = f"executors:oidc-token:{oidc._fingerprint(executor, executor_secrets(executor))}"
    wait_until(lambda: cache.get(key) is None, timeout=5, message="the cached token to expire")
    executor_call(executor=executor, endpoint="analyze", actor=actor)
    assert token_requests(issuer) == 2


@pytest.mark.django_db
@pytest.mark.parametrize("expires_in", ["1e999", 10**30, "soon"])
def test_an_absurd_expires_in_is_taken_as_unknown_and_the_token_used(issuer, partner, make_executor, actor, expires_in):
    issuer.expires_in = expires_in
    executor = make_executor(partner.url, authentication=client_credentials(issuer))
    for _ in range(2):
        assert executor_call(executor=executor, endpoint="analyze", actor=actor).status == 200
    assert token_requests(issuer) == 1  # cached, for a bounded time


@pytest.mark.django_db
def test_wrong_client_secret_is_refused_without_echoing_it(issuer, partner, make_executor, actor):
    auth = client_credentials(issuer)
    auth["config"]["client_secret"] = "not-the-secret-9999"
    executor = make_executor(partner.url, authentication=auth)
    with pytest.raises(PermanentError) as excinfo:
        executor_call(executor=executor, endpoint="analyze", actor=actor)
    assert "invalid_client" in str(excinfo.value)
    assert "not-the-secret" not in str(excinfo.value)


@pytest.mark.django_db
def test_oidc_user_uses_the_refresh_token_first(issuer, partner, make_executor, actor):
    config = {
        "issuer": issuer.state.url,
        "client_id": issuer.client_id,
        "client_secret": issuer.client_secret,
        "refresh_token": "refresh-good-0001",
        "username": "alice",
        "password": "alice-password-123",
    }
    executor = make_executor(partner.url, authentication={"type": "oidc_user", "config": config})
    assert executor_call(executor=executor, endpoint="analyze", actor=actor).status == 200
    assert [i["grant"] for i in issuer.issued] == ["refresh_token"]


@pytest.mark.django_db
def test_oidc_user_falls_back_to_the_password_grant(issuer, partner, make_executor, actor):
    config = {
        "issuer": issuer.state.url,
        "client_id": issuer.client_id,
        "client_secret": issuer.client_secret,
        "refresh_token": "refresh-revoked-0002",
        "username": "alice",
        "password": "alice-password-123",
    }
    executor = make_executor(partner.url, authentication={"type": "oidc_user", "config": config})
    assert executor_call(executor=executor, endpoint="analyze", actor=actor).status == 200
    grants = [r.body for r in issuer.state.requests if r.path == "/token"]
    assert [parse_qs(b.decode())["grant_type"][0] for b in grants] == ["refresh_token", "password"]
    assert [i["grant"] for i in issuer.issued] == ["password"]


@pytest.mark.django_db
def test_partner_rejecting_a_cached_token_gets_a_fresh_one_once(issuer, partner, make_executor, actor):
    executor = make_executor(partner.url, authentication=client_credentials(issuer))
    executor_call(executor=executor, endpoint="analyze", actor=actor)
    issuer.issued.clear()  # the partner no longer accepts the cached token (revoked early)
    assert executor_call(executor=executor, endpoint="analyze", actor=actor).status == 200
    assert token_requests(issuer) == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_threads_share_one_token_request(issuer, make_executor):
    issuer.state.delay = 0.3  # a slow token endpoint makes the race wide open
    executor = make_executor(issuer.state.url, authentication=client_credentials(issuer))
    secrets = executor_secrets(executor)
    barrier = threading.Barrier(8)
    tokens, errors = [], []

    def fetch():
        try:
            barrier.wait()
            tokens.append(oidc.access_token(executor, secrets))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert len(tokens) == 8 and len(set(tokens)) == 1
    assert token_requests(issuer) == 1


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_worker_processes_starting_together_share_one_token_request(issuer, make_executor):
    issuer.state.delay = 0.5
    executor = make_executor(issuer.state.url, authentication=client_credentials(issuer))
    with call_workers(4) as workers:
        start_at = time.time() + 1.0
        for worker in workers:
            worker.send(op="token", executor_id=str(executor.pk), start_at=start_at)
        answers = [worker.receive() for worker in workers]
    assert len({a["pid"] for a in answers}) == 4
    assert {a["token"] for a in answers} == {"access-1"}
    assert token_requests(issuer) == 1


@pytest.mark.django_db
def test_oidc_user_keeps_using_the_rotated_refresh_token(issuer, partner, make_executor, actor):
    issuer.rotate_refresh_tokens = True
    config = {
        "issuer": issuer.state.url,
        "client_id": issuer.client_id,
        "client_secret": issuer.client_secret,
        "refresh_token": "refresh-good-0001",
    }
    executor = make_executor(partner.url, authentication={"type": "oidc_user", "config": config})
    assert executor_call(executor=executor, endpoint="analyze", actor=actor).status == 200
    # The configured refresh token is spent now; a new token needs the one the provider rotated to.
    assert oidc.fresh_access_token(executor, executor_secrets(executor)) == "access-2"
    sent = [parse_qs(r.body.decode())["refresh_token"][0] for r in issuer.state.requests if r.path == "/token"]
    assert sent == ["refresh-good-0001", "refresh-rotated-1"]


@pytest.mark.django_db
def test_oidc_user_without_password_reports_a_refused_refresh_token(issuer, partner, make_executor, actor):
    config = {"issuer": issuer.state.url, "client_id": issuer.client_id, "client_secret": issuer.client_secret}
    executor = make_executor(
        partner.url, authentication={"type": "oidc_user", "config": {**config, "refresh_token": "refresh-unknown"}}
    )
    with pytest.raises(PermanentError, match="invalid_grant"):
        executor_call(executor=executor, endpoint="analyze", actor=actor)
