"""The executor admin: credentials never rendered, masked values keep secrets, changes audited, test action."""

import pytest
from django.contrib.auth import get_user_model

from tests.audit_log import chained_events
from tests.workflows.executors.servers import serve
from workflows.executors.credentials import executor_secrets
from workflows.executors.models import Executor

pytestmark = pytest.mark.django_db

SECRET = "admin-visible-never-0123456789"


@pytest.fixture
def admin_client(client):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "a-long-admin-password-1")
    client.force_login(user)
    return client


def form_data(executor: Executor, **changes):
    data = {
        "name": executor.name,
        "description": executor.description,
        "base_url": executor.base_url,
        "endpoints": '[{"name": "analyze", "path": "/v1/analyze", "method": "POST", "timeout": 5}]',
        "auth_type": executor.auth_type,
        "auth_config": "{}",
        "credentials": '{"token": "****6789"}',
        "tls_client_certificate": "",
        "tls_client_key": "",
        "tls_ca_bundle": "",
        "enabled": "on",
    }
    data.update(changes)
    return data


def test_change_page_shows_credentials_masked_only(admin_client, make_executor):
    executor = make_executor(
        "https://partner.example.com", authentication={"type": "bearer", "config": {"token": SECRET}}
    )
    page = admin_client.get(f"/admin/executors/executor/{executor.pk}/change/").content.decode()
    assert SECRET not in page
    assert "****6789" in page


def test_change_page_opens_when_the_stored_credentials_cannot_be_decrypted(admin_client, make_executor, settings):
    from cryptography.fernet import Fernet

    executor = make_executor(
        "https://partner.example.com", authentication={"type": "bearer", "config": {"token": SECRET}}
    )
    settings.ELSA_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]  # the old key was removed
    url = f"/admin/executors/executor/{executor.pk}/change/"
    page = admin_client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert "cannot be decrypted" in html and "enter them again" in html
    assert SECRET not in html
    # Saving with the masked value is refused (nothing readable to keep); re-entering repairs it.
    refused = admin_client.post(url, form_data(executor, credentials='{"token": "****"}'))
    assert refused.status_code == 200 and "Missing authentication fields" in refused.content.decode()
    repaired = admin_client.post(url, form_data(executor, credentials='{"token": "re-entered-token-0001"}'))
    assert repaired.status_code == 302
    executor.refresh_from_db()
    assert executor_secrets(executor) == {"token": "re-entered-token-0001"}


def test_saving_with_the_masked_value_keeps_the_secret_and_audits(admin_client, make_executor):
    executor = make_executor(
        "https://partner.example.com", authentication={"type": "bearer", "config": {"token": SECRET}}
    )
    response = admin_client.post(
        f"/admin/executors/executor/{executor.pk}/change/", form_data(executor, description="changed")
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    executor.refresh_from_db()
    assert executor.description == "changed"
    assert executor_secrets(executor) == {"token": SECRET}
    event = chained_events().filter(event_type="config.changed", resource_id=str(executor.pk)).latest("id")
    assert event.context["via"] == "admin" and "description" in event.context["fields"]
    assert SECRET not in str(event.context)


def test_saving_a_new_secret_replaces_it(admin_client, make_executor):
    executor = make_executor(
        "https://partner.example.com", authentication={"type": "bearer", "config": {"token": SECRET}}
    )
    data = form_data(executor, credentials='{"token": "a-brand-new-token-value"}')
    assert admin_client.post(f"/admin/executors/executor/{executor.pk}/change/", data).status_code == 302
    executor.refresh_from_db()
    assert executor_secrets(executor) == {"token": "a-brand-new-token-value"}


def test_moving_to_another_origin_with_the_masked_secret_is_refused(admin_client, make_executor):
    executor = make_executor(
        "https://partner.example.com", authentication={"type": "bearer", "config": {"token": SECRET}}
    )
    data = form_data(executor, base_url="https://elsewhere.example.net")
    response = admin_client.post(f"/admin/executors/executor/{executor.pk}/change/", data)
    assert response.status_code == 200
    assert "enter the stored credentials again (token)" in response.content.decode()
    executor.refresh_from_db()
    assert executor.base_url == "https://partner.example.com"
    data = form_data(
        executor, base_url="https://elsewhere.example.net", credentials='{"token": "re-entered-token-0001"}'
    )
    assert admin_client.post(f"/admin/executors/executor/{executor.pk}/change/", data).status_code == 302
    executor.refresh_from_db()
    assert executor.base_url == "https://elsewhere.example.net"
    assert executor_secrets(executor) == {"token": "re-entered-token-0001"}


def test_admin_refuses_what_the_api_refuses(admin_client, make_executor):
    executor = make_executor("https://partner.example.com")
    data = form_data(
        executor, auth_type="none", credentials="{}", endpoints='[{"name": "a", "path": "/a", "timeout": 999}]'
    )
    response = admin_client.post(f"/admin/executors/executor/{executor.pk}/change/", data)
    assert response.status_code == 200 and "timeout" in response.content.decode()


def test_test_connection_action(admin_client, make_executor):
    with serve(lambda r: (200, {}, {})) as server:
        executor = make_executor(server.url)
        response = admin_client.post(
            "/admin/executors/executor/",
            {"action": "test_connection", "_selected_action": [str(executor.pk)]},
            follow=True,
        )
    shown = [str(m) for m in response.context["messages"]]
    assert any(f"{executor.name}: HTTP 200" in m for m in shown), shown
    assert server.count() == 1


def test_adding_an_internal_executor_in_the_admin(admin_client):
    assert admin_client.get("/admin/executors/executor/add/").status_code == 200
    data = {
        "name": "internal-svc",
        "description": "",
        "base_url": "http://10.0.0.7:8080",
        "endpoints": '[{"name": "ping", "path": "/ping"}]',
        "auth_type": "basic",
        "auth_config": '{"username": "svc"}',
        "credentials": '{"password": "svc-password-0001"}',
        "tls_client_certificate": "",
        "tls_client_key": "",
        "tls_ca_bundle": "",
        "enabled": "on",
        "internal": "on",
    }
    response = admin_client.post("/admin/executors/executor/add/", data)
    assert response.status_code == 302, response.content.decode()[-2000:]
    executor = Executor.objects.get(name="internal-svc")
    assert executor.internal and executor.endpoints == [
        {"name": "ping", "path": "/ping", "method": "GET", "timeout": 30}
    ]
    assert executor_secrets(executor) == {"password": "svc-password-0001"}
    assert "svc-password" not in executor.auth_secrets_encrypted
    event = chained_events().get(event_type="config.changed", resource_id=str(executor.pk))
    assert event.action == "created" and "internal" in event.context["fields"]
