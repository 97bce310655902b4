"""Reads of the executors app."""

from django.db.models import QuerySet

from elsa_site.errors import NotFound
from workflows.executors.models import Executor


def executor_list() -> QuerySet[Executor]:
    return Executor.objects.order_by("name")


def executor_get(executor_id) -> Executor:
    try:
        return Executor.objects.get(pk=executor_id)
    except (Executor.DoesNotExist, ValueError, TypeError):
        raise NotFound("Executor not found.") from None


def executor_get_by_name(name: str) -> Executor | None:
    return Executor.objects.filter(name=name).first()
