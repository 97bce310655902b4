"""Admin pages: definitions (edited through the services, validation errors shown) and instances (masked)."""

import json

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.http import HttpResponseRedirect
from django.utils.html import format_html, format_html_join

from audit.actors import actor_from_request
from audit.admin import AuditedModelAdmin
from elsa_site.errors import DomainError
from workflows import services
from workflows.models import (
    ActivityExecution,
    InstanceStatus,
    WorkflowDefinition,
    WorkflowDefinitionVersion,
    WorkflowInstance,
)
from workflows.validation import validate_document


class ServiceDeletingAdmin(AuditedModelAdmin):
    """An audited admin whose deletes go through a service that may refuse them: shown, never a 500.

    Each delete is recorded as `config.changed` (AuditedModelAdmin) next to the service's own event,
    in the same transaction. The confirmation page lists why an object cannot be deleted (as Django
    lists protected objects) and refuses the delete; a refusal that arises in between (an instance
    started meanwhile) rolls the delete back and is shown as a message.
    """

    def delete_refusal(self, obj) -> str | None:
        """Why the service would refuse to delete ``obj`` now, or None."""
        return None

    def service_delete(self, request, obj) -> None:
        raise NotImplementedError

    def get_deleted_objects(self, objs, request):
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        refused = [f"{obj}: {reason}" for obj in objs if (reason := self.delete_refusal(obj))]
        return deleted, counts, perms_needed, [*protected, *refused]

    def delete_model(self, request, obj):
        self._audit(request, obj, action="deleted", fields=[])
        self.service_delete(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for obj in queryset:
                self._audit(request, obj, action="deleted", fields=[])
                self.service_delete(request, obj)

    def _refused(self, request, exc: DomainError) -> HttpResponseRedirect:
        # The admin's transaction (or delete_queryset's) rolled the delete and its events back.
        self.message_user(request, exc.message, messages.ERROR)
        return HttpResponseRedirect(request.get_full_path())

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except DomainError as exc:
            return self._refused(request, exc)

    def changelist_view(self, request, extra_context=None):
        # The bulk "delete selected" action runs here.
        try:
            return super().changelist_view(request, extra_context)
        except DomainError as exc:
            return self._refused(request, exc)


class DefinitionForm(forms.ModelForm):
    """Edits the document of a definition; saving creates a new draft version."""

    document = forms.JSONField(help_text="The workflow definition document (JSON). Saving creates a new draft version.")

    class Meta:
        model = WorkflowDefinition
        fields: list[str] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.initial.get("document"):
            latest = self.instance.versions.order_by("-version").first()
            if latest is not None:
                self.initial["document"] = latest.document

    def clean_document(self):
        document = self.cleaned_data["document"]
        problems = validate_document(document)
        if problems:
            # Every problem with its JSON pointer, as the API answers it.
            raise forms.ValidationError([f"{p['pointer'] or '/'}: {p['message']}" for p in problems])
        return document


class VersionInline(admin.TabularInline):
    model = WorkflowDefinitionVersion
    fields = ["version", "status", "created_at", "published_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WorkflowDefinition)
class WorkflowDefinitionAdmin(ServiceDeletingAdmin):
    audit_resource_type = "workflow-definition"
    form = DefinitionForm
    list_display = ["name", "id", "latest_version", "published", "updated_at"]
    search_fields = ["name"]
    readonly_fields = ["id", "name", "latest_version", "published_version", "created_at", "updated_at"]
    inlines = [VersionInline]
    actions = ["publish_latest", "retract"]

    @admin.display(boolean=True)
    def published(self, obj) -> bool:
        return obj.published_version_id is not None

    def save_model(self, request, obj, form, change):
        # The same services as the API: validation, versioning and audit events in one place.
        actor = actor_from_request(request)
        if change:
            saved = services.workflow_definition_update(
                definition=obj, document=form.cleaned_data["document"], actor=actor
            )
        else:
            saved = services.workflow_definition_create(document=form.cleaned_data["document"], actor=actor)
        obj.__dict__.update({k: v for k, v in saved.__dict__.items() if k != "_state"})
        obj._state.adding = False

    def delete_refusal(self, obj) -> str | None:
        if obj.instances.filter(status__in=(InstanceStatus.RUNNING, InstanceStatus.SUSPENDED)).exists():
            return "has running or suspended instances; cancel them first"
        return None

    def service_delete(self, request, obj) -> None:
        services.workflow_definition_delete(definition=obj, actor=actor_from_request(request))

    def _each(self, request, queryset, action, done: str) -> None:
        for definition in queryset:
            try:
                action(definition=definition, actor=actor_from_request(request))
            except DomainError as exc:
                self.message_user(request, f"{definition.name}: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, f"{definition.name}: {done}", messages.SUCCESS)

    @admin.action(description="Publish the latest version")
    def publish_latest(self, request, queryset):
        self._each(request, queryset, services.workflow_definition_publish, "published")

    @admin.action(description="Retract (stop new instances)")
    def retract(self, request, queryset):
        self._each(request, queryset, services.workflow_definition_retract, "retracted")


class ExecutionInline(admin.TabularInline):
    model = ActivityExecution
    fields = list(ActivityExecution.RECORD_FIELDS)
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WorkflowInstance)
class WorkflowInstanceAdmin(ServiceDeletingAdmin):
    audit_resource_type = "workflow-instance"
    list_display = ["id", "definition", "status", "created_at", "updated_at"]
    list_filter = ["status"]
    search_fields = ["id"]
    # secret_variables (ciphertexts) are never shown: variables_masked shows their names as "****".
    fields = [
        "id",
        "definition",
        "definition_version",
        "status",
        "variables_masked",
        "input",
        "outputs",
        "waiting",
        "fault_activity_id",
        "fault_message",
        "step_count",
        "created_by_type",
        "created_by_id",
        "created_at",
        "updated_at",
        "finished_at",
    ]
    readonly_fields = fields
    inlines = [ExecutionInline]
    actions = ["cancel"]

    @admin.display(description="variables")
    def variables_masked(self, obj) -> str:
        return format_html(
            "<dl>{}</dl>",
            format_html_join(
                "", "<dt>{}</dt><dd>{}</dd>", ((k, json.dumps(v)) for k, v in obj.masked_variables().items())
            ),
        )

    @admin.display(description="waiting activities")
    def waiting(self, obj) -> str:
        return ", ".join((obj.state or {}).get("waiting", {})) or "-"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def delete_refusal(self, obj) -> str | None:
        return "is running or suspended; cancel it first" if obj.is_live else None

    def service_delete(self, request, obj) -> None:
        # The same service as DELETE workflow-instances/{id}: refused while live, audited.
        services.workflow_instance_delete(instance=obj, actor=actor_from_request(request))

    @admin.action(description="Cancel the selected instances")
    def cancel(self, request, queryset):
        for instance in queryset:
            try:
                services.workflow_instance_cancel(instance=instance, actor=actor_from_request(request))
            except DomainError as exc:
                self.message_user(request, f"{instance.pk}: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, f"{instance.pk}: cancelled", messages.SUCCESS)
