"""Reads of the workflows app: definitions, instances and executions, filtered and paginated."""

from django.db.models import QuerySet

from elsa_site.errors import NotFound
from workflows.models import ActivityExecution, WorkflowDefinition, WorkflowDefinitionVersion, WorkflowInstance


def workflow_definition_get(*, definition_id) -> WorkflowDefinition:
    definition = WorkflowDefinition.objects.select_related("published_version").filter(pk=definition_id).first()
    if definition is None:
        raise NotFound("Workflow definition not found.")
    return definition


def workflow_definition_list(*, filters: dict) -> QuerySet[WorkflowDefinition]:
    queryset = WorkflowDefinition.objects.select_related("published_version").order_by("-created_at", "id")
    if filters.get("name"):
        queryset = queryset.filter(name=filters["name"])
    if filters.get("published") is not None:
        queryset = queryset.filter(published_version__isnull=not filters["published"])
    return queryset


def workflow_definition_version_get(
    *, definition: WorkflowDefinition, version: int | None
) -> WorkflowDefinitionVersion:
    found = definition.versions.filter(version=version or definition.latest_version).first()
    if found is None:
        raise NotFound("Workflow definition version not found.")
    return found


def workflow_instance_get(*, instance_id) -> WorkflowInstance:
    instance = WorkflowInstance.objects.select_related("definition_version").filter(pk=instance_id).first()
    if instance is None:
        raise NotFound("Workflow instance not found.")
    return instance


def workflow_instance_list(*, filters: dict) -> QuerySet[WorkflowInstance]:
    queryset = WorkflowInstance.objects.select_related("definition_version").order_by("-created_at", "id")
    if filters.get("status"):
        queryset = queryset.filter(status=filters["status"])
    if filters.get("definition"):
        queryset = queryset.filter(definition_id=filters["definition"])
    if filters.get("created_after"):
        queryset = queryset.filter(created_at__gte=filters["created_after"])
    if filters.get("created_before"):
        queryset = queryset.filter(created_at__lt=filters["created_before"])
    return queryset


def activity_execution_list(*, instance: WorkflowInstance) -> QuerySet[ActivityExecution]:
    return ActivityExecution.objects.filter(instance=instance).order_by("started_at", "id")


def paginate(queryset: QuerySet, *, offset: int, limit: int) -> tuple[list, int]:
    """One page of ``queryset`` and the total count."""
    return list(queryset[offset : offset + limit]), queryset.count()
