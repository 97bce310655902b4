"""Every admin page that can change data records config.changed (issue: every admin save or delete audited)."""

from django.contrib import admin

from audit.admin import AuditedModelAdmin

# Admins that change nothing themselves: read-only, or routed through an audited service.
SERVICE_OR_READ_ONLY = {"audit.AuditEvent", "audit.AuditCheckpoint", "workflows.WorkflowInstance"}


def test_every_admin_that_can_change_data_is_audited(rf):
    request = rf.get("/admin/")
    request.user = type("Superuser", (), {"is_active": True, "is_staff": True, "has_perm": lambda *a: True})()
    unaudited = []
    for model, model_admin in admin.site._registry.items():
        label = model._meta.label
        if isinstance(model_admin, AuditedModelAdmin):
            continue
        if label in SERVICE_OR_READ_ONLY:
            assert not model_admin.has_add_permission(request), label
            assert not model_admin.has_change_permission(request), label
            continue
        unaudited.append(label)
    assert unaudited == []
