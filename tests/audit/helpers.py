"""Audit test helpers: append events through the service, tamper with rows through raw SQL."""

from contextlib import contextmanager

from django.db import connection, transaction

from audit.actors import Actor
from audit.services import audit_record


def append_events(count: int, **fields):
    """Append `count` events through the real service, each in its own transaction."""
    events = []
    for number in range(count):
        with transaction.atomic():
            events.append(
                audit_record(
                    event_type=fields.get("event_type", "workflow.instance.started"),
                    action=fields.get("action", "started"),
                    result=fields.get("result", "success"),
                    resource=fields.get("resource", ("workflow-instance", f"wi-{number}")),
                    actor=fields.get("actor", Actor(type="user", id="u-1", ip="10.0.0.1", name="alice")),
                    context=fields.get("context", {"n": number}),
                )
            )
    return events


@contextmanager
def triggers_disabled():
    """Switch off the append-only triggers, as an attacker with table-owner rights could."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER ALL")
        cursor.execute("ALTER TABLE audit_auditcheckpoint DISABLE TRIGGER ALL")
        try:
            yield cursor
        finally:
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER ALL")
            cursor.execute("ALTER TABLE audit_auditcheckpoint ENABLE TRIGGER ALL")
