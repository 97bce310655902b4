"""ELSA_IDENTITY_FILE identities, hash_secret, the start-up checks, and ensure_admin."""

import io
import json

import pytest
from django.core.management import call_command

from identity.checks import check_identity_file, check_oidc_issuers, check_oidc_jwks_staleness
from tests.identity.factories import UserFactory

pytestmark = pytest.mark.django_db
API = "/elsa/api/identity"


def hash_secret(secret: str, *args) -> dict:
    out = io.StringIO()
    stdin = io.StringIO(secret + "\n")
    import sys

    original, sys.stdin = sys.stdin, stdin
    try:
        call_command("hash_secret", *args, stdout=out)
    finally:
        sys.stdin = original
    return json.loads(out.getvalue())


@pytest.fixture
def identity_file(settings, tmp_path):
    password = hash_secret("file user password 1")
    client_secret = hash_secret("file client secret 1")
    api_key = hash_secret("file-api-key-0123456789-abcdefghijklmnop", "--kind", "api-key")
    data = {
        "Identity": {
            "Roles": [{"Id": "ops", "Name": "ops", "Permissions": ["read:role", "read:user"]}],
            "Users": [
                {
                    "Id": "1",
                    "Name": "fileuser",
                    "HashedPassword": password["hash"],
                    "HashedPasswordSalt": password["salt"],
                    "Roles": ["ops"],
                }
            ],
            "Applications": [
                {
                    "Id": "a1",
                    "Name": "fileapp",
                    "ClientId": "file-client",
                    "HashedClientSecret": client_secret["hash"],
                    "HashedClientSecretSalt": client_secret["salt"],
                    "HashedApiKey": api_key["hash"],
                    "HashedApiKeySalt": api_key["salt"],
                    "Roles": ["ops", "admin"],
                }
            ],
        }
    }
    path = tmp_path / "identity.json"
    path.write_text(json.dumps(data))
    settings.ELSA_IDENTITY_FILE = str(path)
    return path


def test_hash_secret_prints_hash_and_salt_never_the_secret():
    result = hash_secret("s3cret value here")
    assert set(result) == {"hash", "salt"}
    assert "s3cret" not in json.dumps(result)
    from django.contrib.auth.hashers import check_password

    assert check_password("s3cret value here", result["hash"])


def test_config_user_logs_in_with_its_file_roles(client, identity_file):
    response = client.post(
        f"{API}/login", {"username": "fileuser", "password": "file user password 1"}, "application/json"
    )
    assert response.status_code == 200, response.content
    token = response.json()["access_token"]
    me = client.get(f"{API}/me", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert me == {
        "type": "user",
        "id": "config:fileuser",
        "name": "fileuser",
        "permissions": ["read:role", "read:user"],
    }
    refreshed = client.post(
        f"{API}/refresh-token", {"refresh_token": response.json()["refresh_token"]}, "application/json"
    )
    assert refreshed.status_code == 200


def test_config_user_wrong_password_is_401(client, identity_file):
    response = client.post(f"{API}/login", {"username": "fileuser", "password": "nope nope nope"}, "application/json")
    assert response.status_code == 401


def test_config_application_api_key_and_client_credentials(client, identity_file):
    me = client.get(f"{API}/me", HTTP_X_API_KEY="file-api-key-0123456789-abcdefghijklmnop")
    assert me.status_code == 200, me.content
    # "admin" is not in the file: it resolves to the database role, which holds "*".
    assert me.json()["permissions"] == ["*", "read:role", "read:user"]
    token = client.post(
        f"{API}/token",
        {"grant_type": "client_credentials", "client_id": "file-client", "client_secret": "file client secret 1"},
        "application/json",
    )
    assert token.status_code == 200, token.content
    assert client.get(f"{API}/me", HTTP_X_API_KEY="file-api-key-wrong").status_code == 401


def test_config_identities_are_read_only_through_the_api(client, identity_file):
    from tests.identity.factories import principal_headers

    response = client.post(
        f"{API}/users",
        {"username": "fileuser", "password": "another strong pass 1"},
        "application/json",
        **principal_headers("create:user"),
    )
    assert response.status_code == 409


def test_no_conflict_passes_the_check(identity_file):
    assert check_identity_file() == []


def test_a_name_in_both_file_and_database_is_refused_at_start_up(identity_file):
    UserFactory(username="fileuser")
    errors = check_identity_file()
    assert [e.id for e in errors] == ["identity.E001"]
    assert "user 'fileuser'" in errors[0].msg
    from django.core.management.base import SystemCheckError

    with pytest.raises(SystemCheckError, match="identity.E001"):
        call_command("check")


def test_a_client_id_in_both_is_refused(identity_file):
    from identity.models import Application

    Application.objects.create(name="other", client_id="file-client", client_secret_hash="x")
    assert "client id 'file-client'" in check_identity_file()[0].msg


def test_an_unreadable_identity_file_is_refused(settings, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    settings.ELSA_IDENTITY_FILE = str(path)
    assert [e.id for e in check_identity_file()] == ["identity.E002"]


def test_duplicate_names_in_the_identity_file_are_refused_naming_them(client, identity_file, caplog):
    def duplicate(section):
        section["Roles"].append({**section["Roles"][0], "Permissions": ["*"]})
        section["Users"].append({**section["Users"][0], "HashedPassword": "other"})
        section["Applications"].append({**section["Applications"][0], "Name": "another-name"})
        section["Applications"].append({**section["Applications"][0], "ClientId": "another-client"})

    rewrite(identity_file, duplicate)
    errors = check_identity_file()
    assert [e.id for e in errors] == ["identity.E002"]
    for name in ("role 'ops'", "user 'fileuser'", "application client id 'file-client'", "application name 'fileapp'"):
        assert name in errors[0].msg
    # At request time the whole file grants nobody, as for any other invalid content.
    with caplog.at_level("ERROR", logger="elsa.identity"):
        response = client.post(
            f"{API}/login", {"username": "fileuser", "password": "file user password 1"}, "application/json"
        )
    assert response.status_code == 401
    assert "user 'fileuser'" in caplog.text
    assert client.get(f"{API}/me", HTTP_X_API_KEY="file-api-key-0123456789-abcdefghijklmnop").status_code == 401


def test_a_file_rewritten_with_a_duplicate_user_stops_granting_its_previous_version(client, identity_file):
    login = {"username": "fileuser", "password": "file user password 1"}
    assert client.post(f"{API}/login", login, "application/json").status_code == 200
    rewrite(identity_file, lambda section: section["Users"].append({**section["Users"][0], "Roles": ["admin"]}))
    assert client.post(f"{API}/login", login, "application/json").status_code == 401


def admin_client(client):
    from identity.models import User

    client.force_login(User.objects.create_superuser(username="boss", email="", password="x" * 20))
    return client


def test_the_admin_refuses_a_user_named_like_a_file_user(client, identity_file):
    from identity.models import User

    form = {
        "username": "fileuser",
        "usable_password": "true",
        "password1": "a strong pass 12",
        "password2": "a strong pass 12",
    }
    response = admin_client(client).post("/admin/identity/user/add/", form)
    assert response.status_code == 200  # the form again, with the error
    assert "is defined in ELSA_IDENTITY_FILE" in response.content.decode()
    assert not User.objects.filter(username="fileuser").exists()
    assert check_identity_file() == []
    assert client.post("/admin/identity/user/add/", {**form, "username": "dbuser"}).status_code == 302


def test_the_admin_refuses_renaming_a_user_to_a_file_user_name(client, identity_file):
    user = UserFactory(username="dbuser")
    page = admin_client(client).get(f"/admin/identity/user/{user.pk}/change/")
    form = {k: v for k, v in page.context["adminform"].form.initial.items() if v is not None and k != "roles"}
    form.update(username="fileuser", date_joined_0="2026-01-01", date_joined_1="00:00:00")
    response = client.post(f"/admin/identity/user/{user.pk}/change/", form)
    assert response.status_code == 200
    assert "is defined in ELSA_IDENTITY_FILE" in response.content.decode()
    user.refresh_from_db()
    assert user.username == "dbuser"
    assert client.post(f"/admin/identity/user/{user.pk}/change/", {**form, "username": "dbuser2"}).status_code == 302


def test_the_admin_refuses_an_application_named_like_a_file_application(client, identity_file):
    from identity.models import Application

    form = {"name": "fileapp", "enabled": "on", "api_keys-TOTAL_FORMS": "0", "api_keys-INITIAL_FORMS": "0"}
    response = admin_client(client).post("/admin/identity/application/add/", form)
    assert response.status_code == 200
    assert "is defined in ELSA_IDENTITY_FILE" in response.content.decode()
    assert not Application.objects.filter(name="fileapp").exists()
    application = Application.objects.create(name="dbapp", client_id="app_db", client_secret_hash="x")
    response = client.post(f"/admin/identity/application/{application.pk}/change/", form)
    assert "is defined in ELSA_IDENTITY_FILE" in response.content.decode()
    application.refresh_from_db()
    assert application.name == "dbapp"
    renamed = client.post(f"/admin/identity/application/{application.pk}/change/", {**form, "name": "dbapp2"})
    assert renamed.status_code == 302


def test_the_admin_refuses_new_names_while_the_identity_file_cannot_be_read(client, identity_file):
    identity_file.write_text("{broken")
    form = {"name": "newapp", "enabled": "on", "api_keys-TOTAL_FORMS": "0", "api_keys-INITIAL_FORMS": "0"}
    response = admin_client(client).post("/admin/identity/application/add/", form)
    assert response.status_code == 200
    assert "ELSA_IDENTITY_FILE cannot be read" in response.content.decode()


def test_the_api_refuses_renaming_an_application_to_a_file_application_name(client, identity_file):
    from identity.models import Application
    from tests.identity.factories import principal_headers

    application = Application.objects.create(name="dbapp", client_id="app_db", client_secret_hash="x")
    response = client.patch(
        f"{API}/applications/{application.pk}",
        {"name": "fileapp"},
        "application/json",
        **principal_headers("update:application"),
    )
    assert response.status_code == 409
    application.refresh_from_db()
    assert application.name == "dbapp"


def test_the_api_answers_503_for_new_names_while_the_identity_file_cannot_be_read(client, identity_file):
    from identity.models import Application, User
    from tests.identity.factories import principal_headers

    identity_file.write_text("{broken")
    headers = principal_headers("create:user", "create:application")
    response = client.post(f"{API}/users", {"username": "newuser", "password": "another strong pass 1"},
                           "application/json", **headers)  # fmt: skip
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "identity_file_unavailable"
    response = client.post(f"{API}/applications", {"name": "newapp"}, "application/json", **headers)
    assert response.status_code == 503, response.content
    assert not User.objects.filter(username="newuser").exists()
    assert not Application.objects.filter(name="newapp").exists()


def test_oidc_issuer_without_audience_is_refused(settings):
    settings.ELSA_OIDC_ISSUERS = [{"issuer": "https://x", "jwks_url": "https://x/jwks"}]
    assert [e.id for e in check_oidc_issuers()] == ["identity.E003"]


def test_plain_http_jwks_in_production_is_refused(settings):
    settings.ELSA_ENV = "production"
    settings.ELSA_OIDC_ISSUERS = [{"issuer": "https://x", "audience": "a", "jwks_url": "http://x/jwks"}]
    assert [e.id for e in check_oidc_issuers()] == ["identity.E004"]


def test_default_jwks_staleness_bound_passes_the_check():
    assert check_oidc_jwks_staleness() == []


@pytest.mark.parametrize("value", [-1, 7 * 86400 + 1, "86400", None, True])
def test_an_unbounded_or_malformed_jwks_staleness_is_refused(settings, value):
    settings.ELSA_OIDC_JWKS_MAX_STALE_SECONDS = value
    assert [e.id for e in check_oidc_jwks_staleness()] == ["identity.E005"]


def test_ensure_admin_gives_the_admin_the_admin_role():
    from identity.models import User

    call_command("ensure_admin", stdout=io.StringIO())
    admin = User.objects.get(username="admin")
    assert [r.name for r in admin.roles.all()] == ["admin"]
    assert admin.has_permission("delete:user")


def test_ensure_admin_adds_the_role_to_an_existing_superuser():
    from identity.models import User

    User.objects.create_superuser(username="root", email="", password="x" * 20)
    call_command("ensure_admin", stdout=io.StringIO())
    assert [r.name for r in User.objects.get(username="root").roles.all()] == ["admin"]


def test_a_server_started_without_checks_still_refuses_duplicated_file_identities(client, identity_file):
    UserFactory(username="fileuser")
    response = client.post(
        f"{API}/login", {"username": "fileuser", "password": "file user password 1"}, "application/json"
    )
    assert response.status_code == 401
    assert client.get(f"{API}/me", HTTP_X_API_KEY="file-api-key-0123456789-abcdefghijklmnop").status_code == 401


def rewrite(path, change) -> None:
    """Edit the identity file as an operator would, with a later mtime than the version read before."""
    import os

    data = json.loads(path.read_text())
    change(data["Identity"])
    before = os.stat(path).st_mtime_ns
    path.write_text(json.dumps(data))
    os.utime(path, ns=(before + 10_000_000, before + 10_000_000))


def test_user_removed_from_the_file_is_refused_on_the_next_request(client, identity_file):
    login = client.post(
        f"{API}/login", {"username": "fileuser", "password": "file user password 1"}, "application/json"
    )
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {login.json()['access_token']}"}
    assert client.get(f"{API}/me", **bearer).status_code == 200  # its state is now cached
    rewrite(identity_file, lambda section: section.update(Users=[]))
    assert client.get(f"{API}/me", **bearer).status_code == 401


def test_file_application_role_change_reaches_its_api_key_on_the_next_request(client, identity_file):
    key = {"HTTP_X_API_KEY": "file-api-key-0123456789-abcdefghijklmnop"}
    assert "*" in client.get(f"{API}/me", **key).json()["permissions"]  # its principal is now cached
    rewrite(identity_file, lambda section: section["Applications"][0].update(Roles=["ops"]))
    assert client.get(f"{API}/me", **key).json()["permissions"] == ["read:role", "read:user"]
