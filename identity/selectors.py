"""Reads of the identity app."""

from django.db.models import QuerySet

from identity.models import Application, User


def users() -> QuerySet[User]:
    return User.objects.prefetch_related("roles").order_by("username")


def applications() -> QuerySet[Application]:
    return Application.objects.prefetch_related("roles").order_by("name")
