"""identity/token: the OAuth 2 client_credentials grant with RFC 6749 error bodies."""

import base64
import json
from urllib.parse import urlencode

import jwt
import pytest
from django.core.management import call_command

from tests.identity.conftest import audit_events, event_text

pytestmark = pytest.mark.django_db
TOKEN = "/elsa/api/identity/token"
ME = "/elsa/api/identity/me"


def form(client, data, **extra):
    return client.post(TOKEN, urlencode(data), "application/x-www-form-urlencoded", **extra)


@pytest.fixture
def credentials(capsys):
    from identity.models import Role

    Role.objects.create(name="reader", permissions=["read:role", "read:user"])
    call_command("create_application", "--name", "worker", "--role", "reader")
    return json.loads(capsys.readouterr().out)


def test_form_encoded_grant_issues_an_access_token_without_refresh_token(client, credentials):
    response = form(
        client,
        {
            "grant_type": "client_credentials",
            "client_id": credentials["client_id"],
            "client_secret": credentials["client_secret"],
        },
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer" and response["Cache-Control"] == "no-store"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["permissions"] == ["read:role", "read:user"] and claims["principal_type"] == "application"
    me = client.get(ME, HTTP_AUTHORIZATION=f"Bearer {body['access_token']}").json()
    assert me["type"] == "application" and me["name"] == "worker"


def test_json_grant_works_too(client, credentials):
    response = client.post(TOKEN, {"grant_type": "client_credentials", **credentials}, "application/json")
    assert response.status_code == 200, response.content


def test_http_basic_client_authentication_works(client, credentials):
    basic = base64.b64encode(f"{credentials['client_id']}:{credentials['client_secret']}".encode()).decode()
    response = form(client, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=f"Basic {basic}")
    assert response.status_code == 200, response.content


def test_wrong_secret_is_invalid_client_and_audited(client, credentials):
    response = form(
        client, {"grant_type": "client_credentials", "client_id": credentials["client_id"], "client_secret": "nope-123"}
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "WWW-Authenticate" in response
    event = audit_events("identity.token")[-1]
    assert event.result == "failure" and "nope-123" not in event_text(event)


def test_unknown_grant_type_is_unsupported_grant_type(client, credentials):
    response = form(client, {"grant_type": "password", **credentials})
    assert response.status_code == 400 and response.json()["error"] == "unsupported_grant_type"


def test_missing_client_secret_is_invalid_request(client, credentials):
    response = form(client, {"grant_type": "client_credentials", "client_id": credentials["client_id"]})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def test_malformed_json_is_invalid_request(client):
    response = client.post(TOKEN, "{not json", "application/json")
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("body", ["[]", '"client_credentials"', "1", "null"])
def test_json_body_that_is_not_an_object_is_invalid_request(client, body):
    response = client.post(TOKEN, body, "application/json")
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def test_http_basic_and_body_credentials_together_are_invalid_request(client, credentials):
    basic = base64.b64encode(f"{credentials['client_id']}:{credentials['client_secret']}".encode()).decode()
    response = form(client, {"grant_type": "client_credentials", **credentials}, HTTP_AUTHORIZATION=f"Basic {basic}")
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    assert "access_token" not in response.json()


def test_disabled_application_gets_no_token_and_its_tokens_stop(client, credentials):
    from audit.actors import Actor
    from identity.models import Application
    from identity.services import application_set_enabled

    token = form(client, {"grant_type": "client_credentials", **credentials}).json()["access_token"]
    assert client.get(ME, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    app = Application.objects.get(client_id=credentials["client_id"])
    application_set_enabled(application=app, enabled=False, actor=Actor.system("test"), caller_permissions=None)
    assert client.get(ME, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401
    response = form(client, {"grant_type": "client_credentials", **credentials})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_create_application_prints_credentials_once_and_stores_only_hashes(credentials):
    from identity.models import ApiKey, Application

    app = Application.objects.get(client_id=credentials["client_id"])
    assert set(credentials) == {"client_id", "client_secret", "api_key"}
    assert credentials["client_secret"] not in app.client_secret_hash
    stored = ApiKey.objects.get(application=app)
    assert credentials["api_key"] not in stored.key_hash and stored.key_id in credentials["api_key"]
    assert [r.name for r in app.roles.all()] == ["reader"]


def test_create_application_refuses_an_unknown_role():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="Unknown roles"):
        call_command("create_application", "--name", "x", "--role", "missing")
