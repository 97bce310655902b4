"""Users, roles and applications through the identity API, with the permissions of CONTRACT.md."""

import pytest

from identity.models import Application, Role, User
from tests.identity.conftest import audit_events, event_text
from tests.identity.factories import PASSWORD, RoleFactory, UserFactory, principal_headers

pytestmark = pytest.mark.django_db
API = "/elsa/api/identity"


def test_migrations_create_the_admin_role_with_star():
    assert Role.objects.get(name="admin").permissions == ["*"]


def test_create_application_returns_secret_and_key_once(client):
    RoleFactory(name="runner", permissions=["read:role"])
    # The caller holds read:role itself: it may grant only permissions it holds.
    headers = principal_headers("create:application", "read:application", "read:role")
    response = client.post(f"{API}/applications", {"name": "ci", "roles": ["runner"]}, "application/json", **headers)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["client_secret"] and body["api_key"].startswith("elsa_") and body["roles"] == ["runner"]
    # The key works at once, with the role's permissions.
    me = client.get(f"{API}/me", HTTP_X_API_KEY=body["api_key"]).json()
    assert me["name"] == "ci" and me["permissions"] == ["read:role"]
    # Never again: neither the detail nor the list carries a secret.
    for url in (f"{API}/applications/{body['id']}", f"{API}/applications"):
        text = client.get(url, **headers).content.decode()
        assert body["client_secret"] not in text and body["api_key"] not in text
        assert "client_secret" not in text and "hash" not in text
    event = audit_events("identity.application.created")[-1]
    assert body["client_secret"] not in event_text(event) and body["api_key"] not in event_text(event)


def test_create_application_needs_create_application(client):
    response = client.post(
        f"{API}/applications", {"name": "x"}, "application/json", **principal_headers("read:application")
    )
    assert response.status_code == 403
    assert not Application.objects.filter(name="x").exists()


def test_duplicate_application_name_is_409(client):
    headers = principal_headers("create:application")
    client.post(f"{API}/applications", {"name": "dup"}, "application/json", **headers)
    response = client.post(f"{API}/applications", {"name": "dup"}, "application/json", **headers)
    assert response.status_code == 409


def test_rotate_can_also_replace_the_client_secret(client):
    headers = principal_headers("create:application", "update:application")
    created = client.post(f"{API}/applications", {"name": "r"}, "application/json", **headers).json()
    response = client.post(
        f"{API}/applications/{created['id']}/rotate", {"rotate_client_secret": True}, "application/json", **headers
    )
    body = response.json()
    assert body["client_secret"] and body["client_secret"] != created["client_secret"]
    old = client.post(
        f"{API}/token",
        {
            "grant_type": "client_credentials",
            "client_id": created["client_id"],
            "client_secret": created["client_secret"],
        },
        "application/json",
    )
    assert old.status_code == 401


def test_disable_then_enable_application(client):
    headers = principal_headers("create:application", "update:application")
    created = client.post(f"{API}/applications", {"name": "toggle"}, "application/json", **headers).json()
    client.post(f"{API}/applications/{created['id']}/disable", **headers)
    assert client.get(f"{API}/me", HTTP_X_API_KEY=created["api_key"]).status_code == 401
    client.post(f"{API}/applications/{created['id']}/enable", **headers)
    assert client.get(f"{API}/me", HTTP_X_API_KEY=created["api_key"]).status_code == 200


def test_delete_application_stops_its_key(client):
    headers = principal_headers("create:application", "delete:application")
    created = client.post(f"{API}/applications", {"name": "gone"}, "application/json", **headers).json()
    assert client.get(f"{API}/me", HTTP_X_API_KEY=created["api_key"]).status_code == 200
    assert client.delete(f"{API}/applications/{created['id']}", **headers).status_code == 204
    assert client.get(f"{API}/me", HTTP_X_API_KEY=created["api_key"]).status_code == 401


def test_role_crud_with_role_permissions(client):
    headers = principal_headers(
        "create:role", "read:role", "update:role", "delete:role", "read:audit-events", "read:user"
    )
    response = client.post(
        f"{API}/roles", {"name": "auditor", "permissions": ["read:audit-events"]}, "application/json", **headers
    )
    assert response.status_code == 201, response.content
    role_id = response.json()["id"]
    response = client.patch(
        f"{API}/roles/{role_id}", {"permissions": ["read:audit-events", "read:user"]}, "application/json", **headers
    )
    assert response.json()["permissions"] == ["read:audit-events", "read:user"]
    assert client.get(f"{API}/roles/{role_id}", **headers).json()["name"] == "auditor"
    assert client.delete(f"{API}/roles/{role_id}", **headers).status_code == 204
    assert not Role.objects.filter(pk=role_id).exists()


def test_role_with_unknown_permission_is_400(client):
    headers = principal_headers("create:role")
    response = client.post(f"{API}/roles", {"name": "x", "permissions": ["fly:moon"]}, "application/json", **headers)
    assert response.status_code == 400


def test_the_admin_role_cannot_be_deleted(client):
    admin_role = Role.objects.get(name="admin")
    assert client.delete(f"{API}/roles/{admin_role.pk}", **principal_headers("delete:role")).status_code == 409


def test_role_change_reaches_cached_api_keys_on_the_next_request(client):
    from tests.identity.factories import application_with_key

    application, key = application_with_key("read:role")
    role = application.roles.get()
    assert client.get(f"{API}/users", HTTP_X_API_KEY=key).status_code == 403
    client.patch(
        f"{API}/roles/{role.pk}",
        {"permissions": ["read:role", "read:user"]},
        "application/json",
        **principal_headers("update:role", "read:user"),
    )
    assert client.get(f"{API}/users", HTTP_X_API_KEY=key).status_code == 200


def test_role_endpoints_need_role_permissions(client):
    headers = principal_headers("read:role")
    assert (
        client.post(f"{API}/roles", {"name": "x", "permissions": []}, "application/json", **headers).status_code == 403
    )


def test_user_crud_with_user_permissions(client):
    RoleFactory(name="viewer", permissions=["read:role"])
    headers = principal_headers("create:user", "read:user", "update:user", "delete:user", "read:role")
    response = client.post(
        f"{API}/users",
        {"username": "bob", "password": PASSWORD, "email": "bob@example.test", "roles": ["viewer"]},
        "application/json",
        **headers,
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["roles"] == ["viewer"] and "password" not in body
    assert PASSWORD not in response.content.decode()
    assert User.objects.get(username="bob").check_password(PASSWORD)
    login = client.post(f"{API}/login", {"username": "bob", "password": PASSWORD}, "application/json")
    assert login.status_code == 200
    assert client.get(f"{API}/users/{body['id']}", **headers).json()["username"] == "bob"
    users = client.get(f"{API}/users", **headers).json()["items"]
    assert "bob" in [u["username"] for u in users]
    assert client.patch(f"{API}/users/{body['id']}", {"roles": []}, "application/json", **headers).json()["roles"] == []
    assert client.delete(f"{API}/users/{body['id']}", **headers).status_code == 204
    assert client.post(f"{API}/login", {"username": "bob", "password": PASSWORD}, "application/json").status_code == 401


def test_weak_password_is_refused(client):
    response = client.post(
        f"{API}/users", {"username": "weak", "password": "123"}, "application/json", **principal_headers("create:user")
    )
    assert response.status_code == 400
    assert "123" not in response.json()["error"]["message"]


def test_user_endpoints_need_user_permissions(client):
    user = UserFactory()
    headers = principal_headers("read:user")
    assert client.delete(f"{API}/users/{user.pk}", **headers).status_code == 403
    assert (
        client.patch(f"{API}/users/{user.pk}", {"is_active": False}, "application/json", **headers).status_code == 403
    )


# --- A caller grants, and takes over, only what it holds itself -------------------------------


def _refused(response) -> bool:
    return response.status_code == 403 and response.json()["error"]["code"] == "exceeds_own_permissions"


def test_create_application_cannot_grant_a_role_the_caller_does_not_hold(client):
    headers = principal_headers("create:application")
    response = client.post(
        f"{API}/applications", {"name": "escalate", "roles": ["admin"]}, "application/json", **headers
    )
    assert _refused(response), response.content
    assert not Application.objects.filter(name="escalate").exists()


def test_a_star_holder_may_grant_any_role(client):
    headers = principal_headers("*")
    response = client.post(f"{API}/applications", {"name": "ops", "roles": ["admin"]}, "application/json", **headers)
    assert response.status_code == 201, response.content


def test_update_user_cannot_grant_itself_the_admin_role(client):
    user = UserFactory(roles=[RoleFactory(permissions=["update:user"])])
    login = client.post(f"{API}/login", {"username": user.username, "password": PASSWORD}, "application/json")
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {login.json()['access_token']}"}
    response = client.patch(f"{API}/users/{user.pk}", {"roles": ["admin"]}, "application/json", **bearer)
    assert _refused(response), response.content
    assert not user.roles.filter(name="admin").exists()


def test_update_user_may_keep_roles_it_does_not_hold_and_add_one_it_holds(client):
    RoleFactory(name="viewer", permissions=["read:role"])
    user = UserFactory(roles=[RoleFactory(name="operator", permissions=["cancel:workflow-instances"])])
    headers = principal_headers("update:user", "read:role")
    response = client.patch(f"{API}/users/{user.pk}", {"roles": ["operator", "viewer"]}, "application/json", **headers)
    assert response.status_code == 200, response.content
    assert sorted(response.json()["roles"]) == ["operator", "viewer"]


def test_update_user_cannot_take_over_a_superuser(client):
    root = User.objects.create_superuser(username="root-admin", password="x-very-long-password-1")
    headers = principal_headers("update:user", "delete:user")
    for change in ({"password": "attacker-chosen-password-42"}, {"is_active": False}, {"roles": []}):
        assert _refused(client.patch(f"{API}/users/{root.pk}", change, "application/json", **headers)), change
    assert _refused(client.delete(f"{API}/users/{root.pk}", **headers))
    root.refresh_from_db()
    assert root.is_active and root.check_password("x-very-long-password-1")


def test_password_of_a_user_with_more_permissions_cannot_be_reset(client):
    user = UserFactory(roles=[RoleFactory(permissions=["delete:workflow-instances"])])
    headers = principal_headers("update:user")
    response = client.patch(
        f"{API}/users/{user.pk}", {"password": "another-long-password-7"}, "application/json", **headers
    )
    assert _refused(response), response.content
    # Disabling it takes nothing over, so it is allowed.
    assert (
        client.patch(f"{API}/users/{user.pk}", {"is_active": False}, "application/json", **headers).status_code == 200
    )


def test_update_role_cannot_add_star_to_its_own_role(client):
    from tests.identity.factories import application_with_key

    application, key = application_with_key("update:role")
    role = application.roles.get()
    response = client.patch(
        f"{API}/roles/{role.pk}", {"permissions": ["update:role", "*"]}, "application/json", HTTP_X_API_KEY=key
    )
    assert _refused(response), response.content
    role.refresh_from_db()
    assert role.permissions == ["update:role"]


def test_roles_holding_star_are_changed_only_by_a_star_holder(client):
    admin_role = Role.objects.get(name="admin")
    headers = principal_headers("update:role", "read:role")
    response = client.patch(
        f"{API}/roles/{admin_role.pk}", {"permissions": ["read:role"]}, "application/json", **headers
    )
    assert _refused(response), response.content
    assert Role.objects.get(name="admin").permissions == ["*"]


def test_rotating_an_application_needs_every_permission_it_holds(client):
    from tests.identity.factories import application_with_key

    target, _ = application_with_key("*")
    headers = principal_headers("update:application", "delete:application")
    response = client.post(f"{API}/applications/{target.pk}/rotate", {}, "application/json", **headers)
    assert _refused(response), response.content
    assert "api_key" not in response.json()
    assert _refused(client.post(f"{API}/applications/{target.pk}/disable", **headers))
    assert _refused(client.delete(f"{API}/applications/{target.pk}", **headers))
    assert Application.objects.get(pk=target.pk).enabled


def test_password_change_revokes_the_users_refresh_tokens(client):
    user = UserFactory()
    refresh = client.post(f"{API}/login", {"username": user.username, "password": PASSWORD}, "application/json").json()[
        "refresh_token"
    ]
    headers = principal_headers("update:user")
    response = client.patch(
        f"{API}/users/{user.pk}", {"password": "another-long-password-7"}, "application/json", **headers
    )
    assert response.status_code == 200, response.content
    assert client.post(f"{API}/refresh-token", {"refresh_token": refresh}, "application/json").status_code == 401


@pytest.mark.parametrize("path", ["roles", "users", "applications"])
def test_list_offset_beyond_the_bound_is_400(client, path):
    headers = principal_headers("read:role", "read:user", "read:application")
    response = client.get(f"{API}/{path}?offset=" + "9" * 30, **headers)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"
    assert client.get(f"{API}/{path}?offset={2**31 - 1}", **headers).json()["items"] == []
