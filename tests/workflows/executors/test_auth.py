"""Each authentication type, checked by a real partner server on 127.0.0.1 that verifies what it receives."""

import json

import pytest

from tests.workflows.executors.servers import basic_credentials, serve
from workflows.executors.services import executor_call

pytestmark = pytest.mark.django_db


def guarded(check):
    """A partner answering 200 when `check(recorded)` accepts the credentials, 401 otherwise."""

    def respond(recorded):
        if not check(recorded):
            return 401, {"WWW-Authenticate": "Bearer"}, {"error": "unauthorized"}
        return 200, {"X-Partner": "yes"}, {"path": recorded.path, "query": recorded.query}

    return respond


def test_none_sends_no_credentials(make_executor, actor):
    with serve(guarded(lambda r: "authorization" not in r.headers and "x-api-key" not in r.headers)) as server:
        executor = make_executor(server.url)
        result = executor_call(executor=executor, endpoint="item", path_params={"id": "7"}, actor=actor)
    assert (result.kind, result.status) == ("success", 200)
    assert result.body["path"] == "/v1/items/7"
    assert result.headers["x-partner"] == "yes"


def test_api_key_goes_in_the_default_header(make_executor, actor):
    with serve(guarded(lambda r: r.headers.get("x-api-key") == "partner-key-000111")) as server:
        executor = make_executor(
            server.url, authentication={"type": "api_key", "config": {"key": "partner-key-000111"}}
        )
        assert executor_call(executor=executor, endpoint="analyze", body={"a": 1}, actor=actor).status == 200


def test_api_key_with_custom_header_and_prefix(make_executor, actor):
    config = {"key": "k-123456", "header": "Authorization", "prefix": "Token "}
    with serve(guarded(lambda r: r.headers.get("authorization") == "Token k-123456")) as server:
        executor = make_executor(server.url, authentication={"type": "api_key", "config": config})
        assert executor_call(executor=executor, endpoint="analyze", actor=actor).status == 200


def test_api_key_in_a_query_parameter(make_executor, actor):
    config = {"key": "qk-987654", "query_param": "api_key"}
    with serve(guarded(lambda r: r.query.get("api_key") == ["qk-987654"])) as server:
        executor = make_executor(server.url, authentication={"type": "api_key", "config": config})
        result = executor_call(executor=executor, endpoint="item", path_params={"id": 1}, query={"x": "y"}, actor=actor)
    assert result.status == 200
    assert result.body["query"]["x"] == ["y"]


def test_bearer_token(make_executor, actor):
    with serve(guarded(lambda r: r.headers.get("authorization") == "Bearer static-token-abc")) as server:
        executor = make_executor(server.url, authentication={"type": "bearer", "config": {"token": "static-token-abc"}})
        assert executor_call(executor=executor, endpoint="analyze", actor=actor).status == 200


def test_basic_auth(make_executor, actor):
    config = {"username": "elsa", "password": "p@ss:word-42"}
    with serve(guarded(lambda r: basic_credentials(r) == ("elsa", "p@ss:word-42"))) as server:
        executor = make_executor(server.url, authentication={"type": "basic", "config": config})
        assert executor_call(executor=executor, endpoint="analyze", actor=actor).status == 200


def test_wrong_credentials_are_a_client_error(make_executor, actor):
    with serve(guarded(lambda r: r.headers.get("authorization") == "Bearer right")) as server:
        executor = make_executor(server.url, authentication={"type": "bearer", "config": {"token": "wrong-token"}})
        result = executor_call(executor=executor, endpoint="analyze", actor=actor)
    assert (result.kind, result.status) == ("client_error", 401)


def test_workflow_headers_cannot_replace_the_credentials(make_executor, actor):
    with serve(guarded(lambda r: r.headers.get("authorization") == "Bearer configured-1")) as server:
        executor = make_executor(server.url, authentication={"type": "bearer", "config": {"token": "configured-1"}})
        headers = {"authorization": "Bearer forged", "X-Trace": "t1"}
        result = executor_call(executor=executor, endpoint="analyze", headers=headers, actor=actor)
        assert result.status == 200
        assert server.requests[-1].headers["x-trace"] == "t1"


def test_json_body_is_sent_and_json_response_parsed(make_executor, actor):
    def echo(recorded):
        return 201, {}, {"received": json.loads(recorded.body)}

    with serve(echo) as server:
        executor = make_executor(server.url)
        result = executor_call(executor=executor, endpoint="analyze", body={"amount": 5}, actor=actor)
    assert (result.kind, result.status, result.body) == ("success", 201, {"received": {"amount": 5}})


def test_response_body_over_the_limit_is_dropped(make_executor, actor, settings):
    settings.ELSA_EXECUTOR_RESPONSE_MAX_BYTES = 1000
    with serve(lambda r: (200, {}, b"x" * 5000)) as server:
        executor = make_executor(server.url)
        result = executor_call(executor=executor, endpoint="analyze", actor=actor)
    assert result.status == 200 and result.body is None and result.body_too_large


def test_every_call_is_audited_without_credentials_or_bodies(make_executor, actor):
    from tests.audit_log import chained_events

    with serve(guarded(lambda r: r.headers.get("authorization") == "Bearer audit-secret-token")) as server:
        executor = make_executor(
            server.url, authentication={"type": "bearer", "config": {"token": "audit-secret-token"}}
        )
        executor_call(executor=executor, endpoint="analyze", body={"card": "4111"}, attempt=2, actor=actor)
    event = chained_events().filter(event_type="executor.call").latest("id")
    assert event.resource_id == str(executor.pk)
    assert event.metadata["executor"] == executor.name
    assert event.metadata["endpoint"] == "analyze"
    assert event.metadata["method"] == "POST"
    assert event.metadata["status"] == 200
    assert event.metadata["attempt"] == 2
    assert event.metadata["breaker_state"] == "closed"
    assert isinstance(event.metadata["duration_ms"], int)
    dumped = json.dumps([event.metadata, event.context])
    assert "audit-secret-token" not in dumped and "4111" not in dumped


def test_credentials_never_reach_the_logs(make_executor, actor, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    config = {"key": "query-secret-555666777", "query_param": "key"}
    with serve(lambda r: (500, {}, {"error": "boom"})) as server:
        executor = make_executor(server.url, authentication={"type": "api_key", "config": config})
        executor_call(executor=executor, endpoint="analyze", actor=actor)
    assert caplog.records, "the call is logged"
    assert "query-secret-555666777" not in caplog.text
    assert all("query-secret-555666777" not in str(r.__dict__) for r in caplog.records)


@pytest.mark.parametrize(
    "authentication",
    [
        {"type": "bearer", "config": {"token": "partner-bearer-0123456789abcdef\n"}},
        {"type": "api_key", "config": {"key": "k-0123\r\n456789", "header": "X-Key"}},
        {"type": "basic", "config": {"username": "elsa\t", "password": "p@ss-word-42"}},
    ],
)
def test_credentials_with_a_control_character_are_refused_when_configured(api_client, authentication):
    from tests.identity.factories import principal_headers

    data = {"name": "partner", "base_url": "https://partner.example.com", "authentication": authentication}
    response = api_client.post("/elsa/api/executors", data, format="json", **principal_headers("write:executors"))
    assert response.status_code == 400
    error = response.json()["error"]
    assert "control characters" in error["message"]
    (name,) = [k for k, v in authentication["config"].items() if any(ord(c) < 0x20 for c in v)]
    assert error["details"] == {"authentication.config": [name]}
    assert authentication["config"][name].strip() not in response.content.decode()


def test_a_request_h11_refuses_to_send_fails_permanently_without_a_breaker_failure(make_executor, actor):
    from tests.audit_log import chained_events
    from workflows.executors.breaker import CircuitBreaker
    from workflows.executors.client import PermanentError
    from workflows.executors.credentials import encrypt_secrets

    with serve(guarded(lambda r: True)) as server:
        executor = make_executor(server.url, authentication={"type": "bearer", "config": {"token": "t-0123456789"}})
        # Stored before configuration refused control characters.
        executor.auth_secrets_encrypted = encrypt_secrets({"token": "t-0123456789\n"})
        executor.save(update_fields=["auth_secrets_encrypted"])
        with pytest.raises(PermanentError, match="not valid HTTP"):
            executor_call(executor=executor, endpoint="analyze", actor=actor)
        assert server.count() == 0
    assert CircuitBreaker(executor).store.read()["failures"] == 0
    event = chained_events().filter(event_type="executor.call").latest("id")
    assert (event.result, event.metadata["error"]) == ("failure", "permanent")


def test_disabled_executors_are_not_called(make_executor, actor):
    from elsa_site.errors import NotFound
    from workflows.executors.services import executor_update

    with serve(lambda r: (200, {}, {})) as server:
        executor = executor_update(executor=make_executor(server.url), data={"enabled": False}, actor=actor)
        with pytest.raises(NotFound, match="disabled"):
            executor_call(executor=executor, endpoint="analyze", actor=actor)
        assert server.count() == 0
