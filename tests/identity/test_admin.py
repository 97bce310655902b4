"""The admin: application credentials shown once, role permission picker, rotation action."""

import re

import pytest

from identity.apikeys import api_key_parse
from identity.models import ApiKey, Application, Role
from tests.identity.factories import application_with_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    from identity.models import User

    user = User.objects.create_superuser(username="boss", email="", password="x" * 20)
    client.force_login(user)
    return user


def test_new_application_shows_secret_and_key_once(client, staff):
    response = client.post(
        "/admin/identity/application/add/",
        {
            "name": "adminapp",
            "enabled": "on",
            "api_keys-TOTAL_FORMS": "0",
            "api_keys-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200, response.content[:500]
    page = response.content.decode()
    assert "no-store" in response["Cache-Control"]
    api_key = re.search(r"elsa_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", page).group(0)
    application = Application.objects.get(name="adminapp")
    assert ApiKey.objects.get(application=application).key_id == api_key_parse(api_key)[0]
    assert client.get("/elsa/api/identity/me", HTTP_X_API_KEY=api_key).status_code == 200
    change = client.get(f"/admin/identity/application/{application.pk}/change/").content.decode()
    assert api_key not in change and api_key_parse(api_key)[1] not in change
    assert application.client_secret_hash not in change


def test_rotate_action_shows_the_new_key_once_and_stops_the_old(client, staff):
    application, key = application_with_key("read:role")
    response = client.post(
        "/admin/identity/application/",
        {"action": "rotate_credentials", "_selected_action": [str(application.pk)]},
    )
    page = response.content.decode()
    new_key = re.search(r"elsa_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", page).group(0)
    assert new_key != key
    assert client.get("/elsa/api/identity/me", HTTP_X_API_KEY=key).status_code == 401
    assert client.get("/elsa/api/identity/me", HTTP_X_API_KEY=new_key).status_code == 200


def test_role_form_offers_known_permission_strings(client, staff):
    page = client.get("/admin/identity/role/add/").content.decode()
    for permission in ("read:workflow-instances", "create:application", "read:metrics", "*"):
        assert f'value="{permission}"' in page
    response = client.post(
        "/admin/identity/role/add/", {"name": "picked", "description": "", "permissions": ["read:user", "read:role"]}
    )
    assert response.status_code == 302, response.content[:500]
    assert Role.objects.get(name="picked").permissions == ["read:role", "read:user"]


def test_admin_role_save_is_audited_as_config_changed(client, staff):
    from tests.audit_log import chained_events

    client.post("/admin/identity/role/add/", {"name": "audited", "description": "", "permissions": ["read:user"]})
    event = chained_events().filter(event_type="config.changed", resource_type="role").latest("id")
    assert "permissions" in event.context["fields"]


def test_disable_action_refuses_the_key_on_the_next_request(client, staff):
    application, key = application_with_key("read:role")
    assert client.get("/elsa/api/identity/me", HTTP_X_API_KEY=key).status_code == 200
    client.post(
        "/admin/identity/application/",
        {"action": "disable_applications", "_selected_action": [str(application.pk)]},
    )
    application.refresh_from_db()
    assert application.enabled is False
    assert client.get("/elsa/api/identity/me", HTTP_X_API_KEY=key).status_code == 401


def test_api_key_hashes_are_not_shown_in_the_admin(client, staff):
    application, key = application_with_key("read:role")
    stored = ApiKey.objects.get(application=application)
    page = client.get(f"/admin/identity/application/{application.pk}/change/").content.decode()
    assert stored.key_id in page
    assert stored.key_hash not in page and stored.salt not in page


def test_disabling_a_user_in_the_admin_refuses_its_access_token(client, staff):
    from django.test import Client

    from tests.identity.factories import PASSWORD, UserFactory

    user = UserFactory()
    api = Client()
    token = api.post(
        "/elsa/api/identity/login", {"username": user.username, "password": PASSWORD}, "application/json"
    ).json()["access_token"]
    assert api.get("/elsa/api/identity/me", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    # The change form as submitted with "Active" unticked (an unchecked box is simply absent).
    data = {
        "username": user.username,
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
    }
    response = client.post(f"/admin/identity/user/{user.pk}/change/", data)
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.is_active is False
    assert api.get("/elsa/api/identity/me", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401


def test_password_change_in_the_admin_is_audited_and_revokes_refresh_tokens(client, staff):
    from django.test import Client

    from tests.identity.conftest import audit_events, event_text
    from tests.identity.factories import PASSWORD, UserFactory

    user = UserFactory()
    api = Client()
    refresh = api.post(
        "/elsa/api/identity/login", {"username": user.username, "password": PASSWORD}, "application/json"
    ).json()["refresh_token"]
    new_password = "new-password-for-victim-9"
    response = client.post(
        f"/admin/identity/user/{user.pk}/password/",
        {"password1": new_password, "password2": new_password, "usable_password": "true"},
    )
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password(new_password)
    event = [e for e in audit_events("config.changed") if e.resource_type == "user"][-1]
    assert event.resource_id == str(user.pk) and event.context["fields"] == ["password"]
    assert new_password not in event_text(event)
    refreshed = api.post("/elsa/api/identity/refresh-token", {"refresh_token": refresh}, "application/json")
    assert refreshed.status_code == 401


def test_the_builtin_admin_role_cannot_be_deleted_in_the_admin(client, staff):
    role = Role.objects.get(name="admin")
    assert client.post(f"/admin/identity/role/{role.pk}/delete/", {"post": "yes"}).status_code == 403
    client.post(
        "/admin/identity/role/", {"action": "delete_selected", "_selected_action": [str(role.pk)], "post": "yes"}
    )
    assert Role.objects.filter(name="admin").exists()


@pytest.fixture
def limited_staff(client):
    """A staff user (not a superuser) with Django's admin permissions but only user and role permissions."""
    from django.contrib.auth.models import Permission

    from tests.identity.factories import RoleFactory, UserFactory

    user = UserFactory(is_staff=True, roles=[RoleFactory(permissions=["read:user", "update:user", "read:role"])])
    codenames = [
        f"{verb}_{model}" for verb in ("view", "add", "change", "delete") for model in ("user", "role", "application")
    ]
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="identity", codename__in=codenames))
    client.force_login(user)
    return user


def test_staff_without_star_cannot_change_a_superusers_password_in_the_admin(client, limited_staff):
    from identity.models import User

    root = User.objects.create_superuser(username="root", password="root-password-long-1")
    response = client.post(
        f"/admin/identity/user/{root.pk}/password/",
        {"password1": "attacker-password-42x", "password2": "attacker-password-42x", "usable_password": "true"},
    )
    assert response.status_code == 403
    root.refresh_from_db()
    assert root.check_password("root-password-long-1")
    assert client.post(f"/admin/identity/user/{root.pk}/delete/", {"post": "yes"}).status_code == 403


def test_staff_without_star_can_grant_only_permissions_it_holds_in_the_admin(client, limited_staff):
    client.post("/admin/identity/role/add/", {"name": "escalate", "description": "", "permissions": ["*"]})
    assert not Role.objects.filter(name="escalate").exists()
    client.post("/admin/identity/role/add/", {"name": "viewer", "description": "", "permissions": ["read:user"]})
    assert Role.objects.get(name="viewer").permissions == ["read:user"]
    admin_role = Role.objects.get(name="admin")
    page = client.get("/admin/identity/application/add/").content.decode()
    assert f'value="{admin_role.pk}"' not in page


def test_staff_without_star_cannot_rotate_a_star_application_in_the_admin(client, limited_staff):
    application, _ = application_with_key("*")
    response = client.post(
        "/admin/identity/application/",
        {"action": "rotate_credentials", "_selected_action": [str(application.pk)]},
    )
    assert response.status_code == 302
    assert ApiKey.objects.filter(application=application).count() == 1
