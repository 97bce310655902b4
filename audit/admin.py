"""Admin: a read-only view of the audit log, and the base class that audits other apps' admins."""

from django.contrib import admin
from django.db import transaction

from audit.actors import actor_from_request
from audit.models import AuditCheckpoint, AuditEvent
from audit.services import audit_record


class AuditedModelAdmin(admin.ModelAdmin):
    """A ModelAdmin that records every save and delete as `config.changed`, naming changed fields only.

    Subclasses set `audit_resource_type` (e.g. "executor"). Field values are never recorded, so a
    changed credential or secret shows up as a field name and nothing more. The admin wraps its
    add, change and delete views in a transaction, so the event commits or rolls back with the change.
    """

    audit_resource_type: str | None = None

    def _audit_resource_type(self) -> str:
        return self.audit_resource_type or self.model._meta.model_name

    def _audit(self, request, obj, *, action: str, fields: list[str]) -> None:
        audit_record(
            event_type="config.changed",
            action=action,
            resource=(self._audit_resource_type(), str(obj.pk)),
            actor=actor_from_request(request),
            context={"model": self.model._meta.label_lower, "fields": sorted(set(fields)), "via": "admin"},
        )

    def save_related(self, request, form, formsets, change):
        # Runs after save_model inside the admin's transaction, so inline changes are known too.
        super().save_related(request, form, formsets, change)
        fields = list(form.changed_data)
        for formset in formsets:
            prefix = formset.prefix
            for inline_form in formset.forms:
                if inline_form.has_changed():
                    fields.extend(f"{prefix}.{name}" for name in inline_form.changed_data)
            for deleted in getattr(formset, "deleted_objects", []):
                fields.append(f"{prefix}.{deleted._meta.model_name}.deleted")
        if change and not fields:
            return
        self._audit(request, form.instance, action="updated" if change else "created", fields=fields)

    def delete_model(self, request, obj):
        # Recorded before the delete (the pk is gone afterwards), in the same transaction.
        self._audit(request, obj, action="deleted", fields=[])
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        # The bulk "delete selected" action is not wrapped in a transaction by Django; this one is.
        with transaction.atomic(using=queryset.db):
            for obj in queryset:
                self._audit(request, obj, action="deleted", fields=[])
            super().delete_queryset(request, queryset)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Lets staff read audit rows; nobody can add, change or delete them here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "timestamp", "event_type", "action", "result", "resource_type", "resource_id", "actor_type")
    list_filter = ("result", "event_type", "actor_type")
    search_fields = ("event_type", "action", "resource_id", "actor_id")
    date_hierarchy = "timestamp"
    show_full_result_count = False


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(ReadOnlyAdmin):
    list_display = ("id", "event_id", "event_hash", "created")
