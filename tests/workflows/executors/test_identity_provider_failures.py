"""An OIDC identity provider that fails (down, 5xx, 429, slow, refusing the client) is not blamed on the partner."""

import json
import time
from contextlib import suppress

import pytest

from tests.audit_log import chained_events
from tests.workflows.executors.servers import OidcIssuer, serve
from workflows.executors import oidc
from workflows.executors.auth import CredentialsCircuitOpen, CredentialsRefused
from workflows.executors.breaker import (
    CLOSED,
    HALF_OPEN,
    INITIAL,
    OPEN,
    CircuitBreaker,
    DatabaseBreakerStore,
    IdentityProviderBreaker,
    RedisBreakerStore,
)
from workflows.executors.client import PermanentError
from workflows.executors.models import BreakerState
from workflows.executors.services import executor_call, executor_test_connection

DISCOVERY = "/.well-known/openid-configuration"


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


def client_credentials(issuer_url, issuer):
    config = {"issuer": issuer_url, "client_id": issuer.client_id, "client_secret": issuer.client_secret}
    return {"type": "oidc_client_credentials", "config": config}


def assert_no_secret(issuer, *texts):
    for text in texts:
        assert issuer.client_secret not in text
        assert "access-" not in text  # no access token the issuer handed out


def partner_breaker_untouched(executor):
    breaker = CircuitBreaker(executor)
    return breaker.state() == CLOSED and breaker.store.read()["failures"] == 0


def stopped_issuer_url():
    with serve(lambda r: (200, {}, {})) as server:
        url = server.url  # a port that was just free: nothing listens there once the server stops
    return url


UNAVAILABLE = {
    "down": None,
    "token 500": ("/token", (500, {}, {"error": "server_error"})),
    "token 503": ("/token", (503, {}, b"<html>maintenance</html>")),
    "token 429": ("/token", (429, {"Retry-After": "1"}, {"error": "slow_down"})),
    "discovery 502": (DISCOVERY, (502, {}, b"bad gateway")),
    "discovery 429": (DISCOVERY, (429, {}, b"")),
}


@pytest.mark.django_db
@pytest.mark.parametrize("failure", list(UNAVAILABLE), ids=list(UNAVAILABLE))
def test_an_unavailable_identity_provider_does_not_count_against_the_partner_breaker(
    issuer, partner, make_executor, actor, settings, failure
):
    issuer_url = issuer.state.url
    if UNAVAILABLE[failure] is None:
        issuer_url = stopped_issuer_url()
    else:
        path, answer = UNAVAILABLE[failure]
        issuer.failures[path] = answer
    executor = make_executor(partner.url, authentication=client_credentials(issuer_url, issuer))
    results = [
        executor_call(executor=executor, endpoint="analyze", actor=actor) for _ in range(settings.ELSA_BREAKER_FAIL_MAX)
    ]
    for result in results:
        assert (result.kind, result.status, result.transient) == ("credentials", None, True)
        assert result.error.startswith(f"Credential fetch for executor '{executor.name}' failed: ")
        assert issuer_url in result.error  # the identity provider is named, the partner is not blamed
        assert result.breaker_state == CLOSED
        assert_no_secret(issuer, result.error)
    assert partner.count() == 0
    assert partner_breaker_untouched(executor)


@pytest.mark.django_db
def test_a_token_endpoint_timeout_is_the_identity_provider_s_and_retried(
    issuer, partner, make_executor, actor, monkeypatch
):
    monkeypatch.setattr(oidc, "TOKEN_REQUEST_TIMEOUT", 0.3)
    executor = make_executor(partner.url, authentication=client_credentials(issuer.state.url, issuer))
    oidc.token_endpoint(executor)  # discovery answers at once; only the token request is slow
    issuer.state.delay = 1.0
    result = executor_call(executor=executor, endpoint="analyze", actor=actor)
    assert (result.kind, result.transient) == ("credentials", True)
    assert "timed out" in result.error and result.error.startswith("Credential fetch for executor")
    assert partner.count() == 0
    assert partner_breaker_untouched(executor)


@pytest.mark.django_db
def test_the_audit_event_and_log_say_the_credential_fetch_failed_without_secrets(
    issuer, partner, make_executor, actor, caplog
):
    issuer.failures["/token"] = (500, {}, {"error": "server_error", "echo": issuer.client_secret})
    executor = make_executor(partner.url, authentication=client_credentials(issuer.state.url, issuer))
    with caplog.at_level("INFO", logger="elsa.executors"):
        executor_call(executor=executor, endpoint="analyze", actor=actor)
    logged = [r for r in caplog.records if r.name == "elsa.executors"]
    assert [(r.executor, r.status, r.error) for r in logged] == [(executor.name, None, "credentials_unavailable")]
    event = chained_events().filter(event_type="executor.call").latest("id")
    assert event.result == "failure"
    metadata = event.metadata
    assert (metadata["executor"], metadata["status"], metadata["error"]) == (
        executor.name,
        None,
        "credentials_unavailable",
    )
    assert metadata["breaker_state"] == CLOSED
    assert metadata["message"].startswith(f"Credential fetch for executor '{executor.name}' failed: ")
    assert "answered 500" in metadata["message"]
    assert_no_secret(issuer, json.dumps(metadata), json.dumps(event.context))


@pytest.mark.django_db
def test_refused_client_credentials_fail_fast_without_touching_the_partner_breaker(
    issuer, partner, make_executor, actor, settings
):
    issuer.failures["/token"] = (400, {}, {"error": "invalid_client", "error_description": issuer.client_secret})
    executor = make_executor(partner.url, authentication=client_credentials(issuer.state.url, issuer))
    for attempt in range(settings.ELSA_BREAKER_FAIL_MAX + 1):
        with pytest.raises(CredentialsRefused) as excinfo:
            executor_call(executor=executor, endpoint="analyze", actor=actor)
        assert issuer.state.count("/token") == attempt + 1  # one token request per call, no retry within it
    message = str(excinfo.value)
    assert isinstance(excinfo.value, PermanentError)  # the activity faults at once, no Reschedule
    assert message.startswith(f"Credential fetch for executor '{executor.name}' failed: ")
    assert "(400, invalid_client)" in message
    assert partner.count() == 0
    assert partner_breaker_untouched(executor)
    event = chained_events().filter(event_type="executor.call").latest("id")
    assert (event.metadata["error"], event.metadata["message"]) == ("credentials_refused", message)
    assert_no_secret(issuer, message, json.dumps(event.metadata))


@pytest.mark.django_db
def test_a_half_open_partner_keeps_its_probe_when_the_token_fetch_fails(
    issuer, partner, make_executor, actor, settings
):
    issuer.failures["/token"] = (500, {}, {"error": "server_error"})
    executor = make_executor(partner.url, authentication=client_credentials(issuer.state.url, issuer))
    breaker = CircuitBreaker(executor)
    opened_at = time.time() - settings.ELSA_BREAKER_RESET_SECONDS - 1
    breaker.store.update(lambda s: ({**INITIAL, "state": OPEN, "opened_at": opened_at}, None))
    result = executor_call(executor=executor, endpoint="analyze", actor=actor)
    assert (result.kind, result.breaker_state) == ("credentials", HALF_OPEN)
    # The probe slot was handed back: the partner's recovery is still to be tried, not held against it.
    assert breaker.state() == HALF_OPEN and breaker.store.read()["probes"] == 0
    assert breaker.admit().probe


@pytest.mark.django_db
def test_a_401_after_a_cached_token_refreshes_once_and_a_failed_refresh_blames_the_identity_provider(
    issuer, partner, make_executor, actor
):
    executor = make_executor(partner.url, authentication=client_credentials(issuer.state.url, issuer))
    assert executor_call(executor=executor, endpoint="analyze", actor=actor).status == 200
    issuer.issued.clear()  # the partner no longer accepts the cached token (revoked early)...
    issuer.failures["/token"] = (503, {}, {"error": "temporarily_unavailable"})  # ...and the provider is down
    result = executor_call(executor=executor, endpoint="analyze", actor=actor)
    assert result.kind == "credentials" and result.status is None
    assert result.error.startswith(f"Credential fetch for executor '{executor.name}' failed: ")
    assert partner.count() == 2  # the first call, and the one answered 401: not resent without a token
    assert issuer.state.count("/token") == 2  # the first token, and one refresh
    assert partner_breaker_untouched(executor)


@pytest.mark.django_db
def test_test_connection_reports_a_failed_credential_fetch(issuer, partner, make_executor, actor):
    issuer.failures["/token"] = (500, {}, {"error": "server_error"})
    executor = make_executor(partner.url, authentication=client_credentials(issuer.state.url, issuer))
    result = executor_test_connection(executor=executor, actor=actor)
    assert result["ok"] is False and result["status"] is None
    assert result["error"].startswith(f"Credential fetch for executor '{executor.name}' failed: ")
    assert partner.count() == 0


@pytest.mark.django_db
def test_a_policy_refusal_on_the_way_to_the_identity_provider_is_a_credential_fetch_failure(
    issuer, partner, make_executor, actor, settings
):
    port = issuer.state.url.rsplit(":", 1)[1]
    executor = make_executor(partner.url, authentication=client_credentials(f"http://localhost:{port}", issuer))
    # Production: plain http is refused except to allowlisted hosts; the partner is one, the issuer not.
    settings.ELSA_ENV = "production"
    settings.ELSA_EXECUTOR_HTTP_ALLOWLIST = ["127.0.0.1"]
    with pytest.raises(CredentialsRefused) as excinfo:
        executor_call(executor=executor, endpoint="analyze", actor=actor)
    assert str(excinfo.value) == (
        f"Credential fetch for executor '{executor.name}' failed: "
        "Plain http to localhost is not allowed in production (ELSA_EXECUTOR_HTTP_ALLOWLIST)."
    )
    assert issuer.state.count() == 0 and partner.count() == 0
    assert partner_breaker_untouched(executor)
    event = chained_events().filter(event_type="executor.call").latest("id")
    assert event.metadata["error"] == "credentials_refused"


# --- The identity provider's own breaker -----------------------------------------------------------


def open_past_reset(breaker, settings):
    opened_at = time.time() - settings.ELSA_BREAKER_RESET_SECONDS - 1
    breaker.store.update(lambda s: ({**INITIAL, "state": OPEN, "opened_at": opened_at}, None))


@pytest.mark.django_db
def test_an_identity_provider_failing_repeatedly_opens_its_own_breaker_and_is_refused_at_once(
    issuer, partner, make_executor, actor, settings
):
    issuer.failures["/token"] = (500, {}, {"error": "server_error"})
    executor = make_executor(partner.url, authentication=client_credentials(issuer.state.url, issuer))
    for _ in range(settings.ELSA_BREAKER_FAIL_MAX):
        assert executor_call(executor=executor, endpoint="analyze", actor=actor).kind == "credentials"
    assert IdentityProviderBreaker(issuer.state.url).state() == OPEN
    with pytest.raises(CredentialsCircuitOpen) as excinfo:
        executor_call(executor=executor, endpoint="analyze", actor=actor)
    assert isinstance(excinfo.value, PermanentError)  # the activity faults at once, as for an open partner circuit
    message = str(excinfo.value)
    assert message.startswith(f"Credential fetch for executor '{executor.name}' failed: ")
    assert f"Circuit breaker open for the identity provider {issuer.state.url}" in message
    assert issuer.state.count("/token") == settings.ELSA_BREAKER_FAIL_MAX  # refused without a request
    assert partner.count() == 0
    assert partner_breaker_untouched(executor)
    event = chained_events().filter(event_type="executor.call").latest("id")
    assert (event.metadata["error"], event.metadata["message"]) == ("credentials_circuit_open", message)
    assert_no_secret(issuer, message)


@pytest.mark.django_db
def test_the_identity_provider_breaker_is_shared_by_the_executors_of_that_issuer(
    issuer, partner, make_executor, actor, settings
):
    issuer.failures["/token"] = (503, {}, {"error": "temporarily_unavailable"})
    first = make_executor(partner.url, authentication=client_credentials(issuer.state.url, issuer))
    second = make_executor(partner.url, authentication=client_credentials(issuer.state.url + "/", issuer))
    for _ in range(settings.ELSA_BREAKER_FAIL_MAX):
        executor_call(executor=first, endpoint="analyze", actor=actor)
    with pytest.raises(CredentialsCircuitOpen, match=f"executor '{second.name}'"):
        executor_call(executor=second, endpoint="analyze", actor=actor)
    assert issuer.state.count("/token") == settings.ELSA_BREAKER_FAIL_MAX
    assert partner_breaker_untouched(first) and partner_breaker_untouched(second)


@pytest.mark.django_db
def test_an_answer_from_the_identity_provider_even_a_refusal_resets_its_failure_count(
    issuer, partner, make_executor, actor, settings
):
    executor = make_executor(partner.url, authentication=client_credentials(issuer.state.url, issuer))
    for answer in [(500, {}, {})] * (settings.ELSA_BREAKER_FAIL_MAX - 1) + [(400, {}, {"error": "invalid_client"})]:
        issuer.failures["/token"] = answer
        with suppress(CredentialsRefused):
            executor_call(executor=executor, endpoint="analyze", actor=actor)
    issuer.failures["/token"] = (500, {}, {})
    for _ in range(settings.ELSA_BREAKER_FAIL_MAX - 1):
        assert executor_call(executor=executor, endpoint="analyze", actor=actor).kind == "credentials"
    assert IdentityProviderBreaker(issuer.state.url).state() == CLOSED


@pytest.mark.django_db
def test_the_identity_provider_breaker_closes_after_a_successful_probe(issuer, partner, make_executor, actor, settings):
    executor = make_executor(partner.url, authentication=client_credentials(issuer.state.url, issuer))
    breaker = IdentityProviderBreaker(issuer.state.url)
    open_past_reset(breaker, settings)
    assert breaker.state() == HALF_OPEN
    assert executor_call(executor=executor, endpoint="analyze", actor=actor).status == 200
    assert breaker.state() == CLOSED
    assert issuer.state.count("/token") == 1


@pytest.mark.django_db
def test_a_failed_probe_opens_the_identity_provider_breaker_again(issuer, partner, make_executor, actor, settings):
    issuer.failures["/token"] = (502, {}, {})
    executor = make_executor(partner.url, authentication=client_credentials(issuer.state.url, issuer))
    breaker = IdentityProviderBreaker(issuer.state.url)
    open_past_reset(breaker, settings)
    assert executor_call(executor=executor, endpoint="analyze", actor=actor).kind == "credentials"
    assert breaker.state() == OPEN
    assert partner_breaker_untouched(executor)


@pytest.mark.django_db
def test_a_cached_token_is_used_while_the_identity_provider_circuit_is_open(issuer, partner, make_executor, actor):
    executor = make_executor(partner.url, authentication=client_credentials(issuer.state.url, issuer))
    assert executor_call(executor=executor, endpoint="analyze", actor=actor).status == 200
    breaker = IdentityProviderBreaker(issuer.state.url)
    breaker.store.update(lambda s: ({**INITIAL, "state": OPEN, "opened_at": time.time()}, None))
    assert executor_call(executor=executor, endpoint="analyze", actor=actor).status == 200
    assert issuer.state.count("/token") == 1


@pytest.mark.django_db
def test_test_connection_fetches_a_token_while_the_identity_provider_circuit_is_open(
    issuer, partner, make_executor, actor
):
    executor = make_executor(partner.url, authentication=client_credentials(issuer.state.url, issuer))
    breaker = IdentityProviderBreaker(issuer.state.url)
    breaker.store.update(lambda s: ({**INITIAL, "state": OPEN, "opened_at": time.time()}, None))
    result = executor_test_connection(executor=executor, actor=actor)
    assert result["ok"] is True, result["error"]
    assert issuer.state.count("/token") == 1
    assert breaker.state() == OPEN  # a test is neither a probe nor a success


@pytest.mark.django_db
def test_without_a_shared_cache_the_identity_provider_breaker_lives_in_the_database(settings):
    assert isinstance(IdentityProviderBreaker("https://idp.example").store, RedisBreakerStore)
    settings.CACHE_IS_SHARED = False
    breaker = IdentityProviderBreaker("https://idp.example")
    assert isinstance(breaker.store, DatabaseBreakerStore)
    breaker.record(breaker.admit(), success=False)
    assert BreakerState.objects.get(key=breaker.store.key).state["failures"] == 1


# --- The provider's error code ---------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "echoed",
    ["client_secret", "password", "refresh_token", "description"],
)
def test_an_error_code_echoing_what_was_sent_is_not_reported(issuer, partner, make_executor, actor, echoed):
    config = {
        "issuer": issuer.state.url,
        "client_id": issuer.client_id,
        "client_secret": issuer.client_secret,
        "refresh_token": "refresh-good-0001",
        "username": "alice",
        "password": "alice-password-123",
    }
    executor = make_executor(partner.url, authentication={"type": "oidc_user", "config": config})
    code = {
        "client_secret": f"bad_{issuer.client_secret}",
        "password": "alice-password-123",
        "refresh_token": "refresh-good-0001",
        "description": "The client secret you sent was not right",
    }[echoed]
    issuer.failures["/token"] = (400, {}, {"error": code})
    with pytest.raises(CredentialsRefused) as excinfo:
        executor_call(executor=executor, endpoint="analyze", actor=actor)
    message = str(excinfo.value)
    assert "(400, unrecognised error code)" in message
    event = chained_events().filter(event_type="executor.call").latest("id")
    for text in (message, json.dumps(event.metadata)):
        assert code not in text
        for secret in (issuer.client_secret, "alice-password-123", "refresh-good-0001"):
            assert secret not in text


@pytest.mark.django_db
def test_a_plain_error_code_is_reported(issuer, partner, make_executor, actor):
    issuer.failures["/token"] = (401, {}, {"error": "unauthorized_client", "error_description": "nope"})
    executor = make_executor(partner.url, authentication=client_credentials(issuer.state.url, issuer))
    with pytest.raises(CredentialsRefused, match=r"\(401, unauthorized_client\)\.$"):
        executor_call(executor=executor, endpoint="analyze", actor=actor)
