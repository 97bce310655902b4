"""The executors API: CRUD with permissions, write-only masked credentials, config audit, test connection."""

import json

import pytest

from tests.audit_log import chained_events
from tests.identity.factories import principal_headers
from tests.workflows.executors.servers import OidcIssuer, serve
from workflows.executors.credentials import executor_secrets
from workflows.executors.models import Executor

pytestmark = pytest.mark.django_db

URL = "/elsa/api/executors"
SECRET = "sk_live_0123456789abcdefWXYZ"


def payload(**extra):
    data = {
        "name": "fraud-check",
        "description": "Fraud scoring",
        "base_url": "https://fraud.example.com/api",
        "endpoints": [{"name": "analyze", "path": "/analyze", "method": "POST", "timeout": 10}],
        "authentication": {"type": "api_key", "config": {"key": SECRET, "header": "X-Partner-Key"}},
        "enabled": True,
    }
    data.update(extra)
    return data


def create(api_client, **extra):
    headers = principal_headers("write:executors")
    return api_client.post(URL, payload(**extra), format="json", **headers)


def test_create_masks_credentials_and_encrypts_them_at_rest(api_client):
    response = create(api_client)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["authentication"] == {
        "type": "api_key",
        "config": {"header": "X-Partner-Key", "key": "****WXYZ"},
    }
    assert SECRET not in response.content.decode()
    executor = Executor.objects.get(pk=body["id"])
    assert SECRET not in executor.auth_secrets_encrypted
    assert SECRET not in json.dumps(executor.auth_config)
    assert executor_secrets(executor) == {"key": SECRET}
    assert body["internal"] is False


def test_short_secrets_are_masked_without_any_characters():
    from workflows.executors.credentials import mask

    assert mask("hunter2-pass") == "****"
    assert mask("a-long-enough-secret") == "****cret"


def test_read_and_list_never_show_secrets(api_client):
    executor_id = create(api_client).json()["id"]
    headers = principal_headers("read:executors")
    detail = api_client.get(f"{URL}/{executor_id}", **headers)
    listing = api_client.get(URL, **headers)
    assert detail.status_code == listing.status_code == 200
    assert listing.json()["items"][0]["name"] == "fraud-check"
    for response in (detail, listing):
        assert SECRET not in response.content.decode()
        assert "****WXYZ" in response.content.decode()


def test_patch_without_secrets_keeps_them(api_client):
    executor_id = create(api_client).json()["id"]
    headers = principal_headers("write:executors")
    masked = {"type": "api_key", "config": {"key": "****WXYZ", "header": "X-Other"}}
    response = api_client.patch(f"{URL}/{executor_id}", {"authentication": masked}, format="json", **headers)
    assert response.status_code == 200, response.content
    executor = Executor.objects.get(pk=executor_id)
    assert executor_secrets(executor) == {"key": SECRET}
    assert executor.auth_config == {"header": "X-Other"}


def test_patch_replaces_a_secret_and_audits_field_names_only(api_client):
    executor_id = create(api_client).json()["id"]
    headers = principal_headers("write:executors")
    new = {"type": "api_key", "config": {"key": "sk_live_new_secret_value_7777"}}
    response = api_client.patch(f"{URL}/{executor_id}", {"authentication": new}, format="json", **headers)
    assert response.status_code == 200
    assert executor_secrets(Executor.objects.get(pk=executor_id)) == {"key": "sk_live_new_secret_value_7777"}
    event = chained_events().filter(event_type="config.changed", resource_id=executor_id).latest("id")
    assert event.action == "updated"
    assert "auth_secrets_encrypted" in event.context["fields"]
    assert "sk_live" not in json.dumps([event.context, event.metadata])


@pytest.mark.parametrize(
    "change",
    [
        {"base_url": "https://elsewhere.example.net/api"},
        {"base_url": "https://fraud.example.com:8443/api"},
        {
            "base_url": "https://elsewhere.example.net",
            "authentication": {"type": "api_key", "config": {"key": "****WXYZ"}},
        },
    ],
)
def test_moving_the_executor_to_another_origin_without_entering_the_secrets_again_is_refused(api_client, change):
    # Write-only: a caller who never saw the key may not redirect it to a host of their choosing.
    executor_id = create(api_client).json()["id"]
    response = api_client.patch(f"{URL}/{executor_id}", change, format="json", **principal_headers("write:executors"))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["details"] == {"authentication.config": ["key"]}
    assert "enter the stored credentials again (key)" in error["message"]
    assert SECRET not in response.content.decode()
    assert Executor.objects.get(pk=executor_id).base_url == "https://fraud.example.com/api"


def test_moving_the_executor_to_another_origin_with_the_secrets_entered_again_is_accepted(api_client):
    executor_id = create(api_client).json()["id"]
    headers = principal_headers("write:executors")
    same_origin = {"base_url": "https://fraud.example.com/v2"}
    same_origin = api_client.patch(f"{URL}/{executor_id}", same_origin, format="json", **headers)
    assert same_origin.status_code == 200, same_origin.content
    change = {
        "base_url": "https://elsewhere.example.net",
        "authentication": {"type": "api_key", "config": {"key": "sk_live_re-entered_value_0000"}},
    }
    assert api_client.patch(f"{URL}/{executor_id}", change, format="json", **headers).status_code == 200
    executor = Executor.objects.get(pk=executor_id)
    assert executor.base_url == "https://elsewhere.example.net"
    assert executor_secrets(executor) == {"key": "sk_live_re-entered_value_0000"}


def test_changing_the_oidc_issuer_without_entering_the_client_secret_again_is_refused(api_client):
    oidc = {"issuer": "https://login.example.com", "client_id": "elsa", "client_secret": "oidc-secret-0123456789"}
    executor_id = create(api_client, authentication={"type": "oidc_client_credentials", "config": oidc}).json()["id"]
    headers = principal_headers("write:executors")
    moved = {**oidc, "issuer": "https://idp.elsewhere.example.net", "client_secret": "****6789"}
    change = {"authentication": {"type": "oidc_client_credentials", "config": moved}}
    response = api_client.patch(f"{URL}/{executor_id}", change, format="json", **headers)
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"authentication.config": ["client_secret"]}
    assert Executor.objects.get(pk=executor_id).auth_config["issuer"] == "https://login.example.com"
    moved["client_secret"] = "oidc-secret-for-the-new-idp"
    response = api_client.patch(f"{URL}/{executor_id}", change, format="json", **headers)
    assert response.status_code == 200, response.content


def test_create_and_delete_are_audited(api_client):
    executor_id = create(api_client).json()["id"]
    response = api_client.delete(f"{URL}/{executor_id}", **principal_headers("delete:executors"))
    assert response.status_code == 204
    actions = list(
        chained_events()
        .filter(event_type="config.changed", resource_id=executor_id)
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == ["created", "deleted"]
    assert not Executor.objects.filter(pk=executor_id).exists()


def test_duplicate_names_conflict(api_client):
    assert create(api_client).status_code == 201
    assert create(api_client).status_code == 409


@pytest.mark.parametrize(
    "change",
    [
        {"endpoints": [{"name": "a", "path": "/a", "timeout": 301}]},
        {"endpoints": [{"name": "a", "path": "/a", "timeout": 0}]},
        {"endpoints": [{"name": "a", "path": "http://evil/a"}]},
        {"authentication": {"type": "kerberos", "config": {}}},
        {"authentication": {"type": "bearer", "config": {}}},
        {"base_url": "ftp://x"},
        {"tls": {"client_key": "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"}},
    ],
)
def test_invalid_configurations_are_refused(api_client, change):
    response = create(api_client, **change)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert "not a key" not in response.content.decode()


def test_internal_cannot_be_set_through_the_api(api_client):
    response = create(api_client, internal=True)
    assert response.status_code == 400
    assert "administrator" in response.json()["error"]["message"]
    created = create(api_client, internal=False).json()
    headers = principal_headers("write:executors")
    echoed = api_client.patch(f"{URL}/{created['id']}", {**created, "description": "d"}, format="json", **headers)
    assert echoed.status_code == 200, echoed.content
    refused = api_client.patch(f"{URL}/{created['id']}", {"internal": True}, format="json", **headers)
    assert refused.status_code == 400
    assert not Executor.objects.filter(internal=True).exists()


@pytest.mark.parametrize(
    ("method", "path", "granted"),
    [
        ("get", "", "write:executors"),
        ("post", "", "read:executors"),
        ("patch", "/{id}", "read:executors"),
        ("delete", "/{id}", "write:executors"),
        ("post", "/{id}/test", "read:executors"),
    ],
)
def test_each_operation_needs_its_permission(api_client, method, path, granted):
    executor_id = create(api_client).json()["id"]
    url = URL + path.format(id=executor_id)
    assert getattr(api_client, method)(url, {}, format="json").status_code == 401
    assert getattr(api_client, method)(url, {}, format="json", **principal_headers(granted)).status_code == 403


def test_test_connection_reports_accepted_credentials(api_client, make_executor):
    def respond(recorded):
        ok = recorded.headers.get("authorization") == "Bearer conn-test-token"
        return (200 if ok else 401), {}, {}

    with serve(respond) as server:
        executor = make_executor(server.url, authentication={"type": "bearer", "config": {"token": "conn-test-token"}})
        headers = principal_headers("write:executors")
        response = api_client.post(f"{URL}/{executor.pk}/test", **headers)
        assert response.status_code == 200
        assert response.json()["ok"] is True and response.json()["status"] == 200
        bad = make_executor(server.url, authentication={"type": "bearer", "config": {"token": "wrong"}})
        result = api_client.post(f"{URL}/{bad.pk}/test", **headers).json()
    assert result["ok"] is False and "refused the credentials" in result["error"]
    event = chained_events().filter(action="test_connection").latest("id")
    assert event.event_type == "executor.call" and event.result == "failure"


def test_test_connection_obtains_an_oidc_token(api_client, make_executor):
    issuer = OidcIssuer()
    with serve(issuer.respond) as issuer_state, serve(lambda r: (200, {}, {})) as server:
        issuer.state = issuer_state
        config = {"issuer": issuer_state.url, "client_id": issuer.client_id, "client_secret": issuer.client_secret}
        executor = make_executor(server.url, authentication={"type": "oidc_client_credentials", "config": config})
        result = api_client.post(f"{URL}/{executor.pk}/test", **principal_headers("write:executors")).json()
    assert result["ok"] is True
    assert server.requests[0].headers["authorization"] == "Bearer access-1"


def test_test_connection_reports_ssrf_refusal(api_client, make_executor):
    executor = make_executor("http://127.0.0.1:9", internal=False)
    result = api_client.post(f"{URL}/{executor.pk}/test", **principal_headers("write:executors")).json()
    assert result["ok"] is False and "loopback" in result["error"]


def test_credentials_encrypted_with_a_removed_key_are_reported_not_leaked(api_client, settings, make_executor, actor):
    from cryptography.fernet import Fernet

    from workflows.executors.credentials import CredentialsUnreadable
    from workflows.executors.services import executor_call

    executor = make_executor("http://127.0.0.1:9", authentication={"type": "bearer", "config": {"token": SECRET}})
    settings.ELSA_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]  # the old key is gone
    body = api_client.get(f"{URL}/{executor.pk}", **principal_headers("read:executors")).json()
    assert body["authentication"]["config"] == {"token": "****", "credentials_unreadable": True}
    with pytest.raises(CredentialsUnreadable, match="enter them again"):
        executor_call(executor=executor, endpoint="analyze", actor=actor)
    patch = {"authentication": {"type": "bearer", "config": {"token": "re-entered-token-000"}}}
    response = api_client.patch(f"{URL}/{executor.pk}", patch, format="json", **principal_headers("write:executors"))
    assert response.status_code == 200
    assert executor_secrets(Executor.objects.get(pk=executor.pk)) == {"token": "re-entered-token-000"}
