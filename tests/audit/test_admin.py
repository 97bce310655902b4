"""Admin: AuditedModelAdmin records config.changed with field names only; the audit admin is read-only."""

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.test import override_settings
from django.urls import path

from audit.admin import AuditedModelAdmin
from audit.models import AuditCheckpoint, AuditEvent
from identity.models import User
from tests.audit.helpers import append_events
from tests.audit_log import chained_events

pytestmark = pytest.mark.django_db


class GroupAdmin(AuditedModelAdmin):
    audit_resource_type = "group"
    fields = ("name",)


site = admin.AdminSite(name="audited_admin_test")
site.register(Group, GroupAdmin)
site.register(AuditEvent, admin.site._registry[AuditEvent].__class__)
site.register(AuditCheckpoint, admin.site._registry[AuditCheckpoint].__class__)
urlpatterns = [path("test-admin/", site.urls)]


@pytest.fixture
def staff_client(client):
    user = User.objects.create_superuser(username="root", password="correct horse battery staple x")
    client.force_login(user)
    client.user = user
    return client


@override_settings(ROOT_URLCONF=__name__)
def test_admin_add_records_config_changed_with_field_names(staff_client):
    response = staff_client.post("/test-admin/auth/group/add/", {"name": "s3cr3t-value"})
    assert response.status_code == 302
    group = Group.objects.get(name="s3cr3t-value")
    event = chained_events().get(event_type="config.changed")
    assert (event.action, event.resource_type, event.resource_id) == ("created", "group", str(group.pk))
    assert event.context["fields"] == ["name"]
    assert (event.actor_type, event.actor_id, event.actor_name) == ("user", str(staff_client.user.pk), "root")
    # Field values never reach the audit log.
    assert "s3cr3t-value" not in str(event.context) + str(event.metadata)


@override_settings(ROOT_URLCONF=__name__)
def test_admin_change_records_only_changed_fields(staff_client):
    group = Group.objects.create(name="ops")
    response = staff_client.post(f"/test-admin/auth/group/{group.pk}/change/", {"name": "ops-renamed"})
    assert response.status_code == 302
    event = chained_events().get(event_type="config.changed")
    assert (event.action, event.context["fields"]) == ("updated", ["name"])
    assert "ops-renamed" not in str(event.context)


@override_settings(ROOT_URLCONF=__name__)
def test_admin_save_without_changes_records_nothing(staff_client):
    group = Group.objects.create(name="ops")
    staff_client.post(f"/test-admin/auth/group/{group.pk}/change/", {"name": "ops"})
    assert not chained_events().exists()


@override_settings(ROOT_URLCONF=__name__)
def test_admin_delete_records_config_changed(staff_client):
    group = Group.objects.create(name="ops")
    response = staff_client.post(f"/test-admin/auth/group/{group.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    event = chained_events().get(event_type="config.changed")
    assert (event.action, event.resource_id) == ("deleted", str(group.pk))


@override_settings(ROOT_URLCONF=__name__)
def test_admin_bulk_delete_records_one_event_per_object(staff_client):
    groups = [Group.objects.create(name=f"g{n}") for n in range(3)]
    response = staff_client.post(
        "/test-admin/auth/group/",
        {"action": "delete_selected", "_selected_action": [g.pk for g in groups], "post": "yes"},
    )
    assert response.status_code == 302
    assert not Group.objects.exists()
    assert sorted(chained_events().filter(action="deleted").values_list("resource_id", flat=True)) == sorted(
        str(g.pk) for g in groups
    )


@override_settings(ROOT_URLCONF=__name__)
def test_audit_admin_lists_events_but_refuses_changes(staff_client):
    event = append_events(1)[0]
    assert staff_client.get("/test-admin/audit/auditevent/").status_code == 200
    assert staff_client.get(f"/test-admin/audit/auditevent/{event.pk}/change/").status_code == 200
    assert staff_client.get("/test-admin/audit/auditevent/add/").status_code == 403
    assert staff_client.post(f"/test-admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert (
        staff_client.post(f"/test-admin/audit/auditevent/{event.pk}/change/", {"action": "edited"}).status_code == 403
    )
    assert AuditEvent.objects.get(pk=event.pk).action == "started"
    assert staff_client.get("/test-admin/audit/auditcheckpoint/").status_code == 200
