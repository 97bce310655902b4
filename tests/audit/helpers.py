"""Audit test helpers: append events through the service, tamper with rows through raw SQL."""

from contextlib import contextmanager
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction

from audit.actors import Actor
from audit.chain import checkpoint_signature
from audit.models import AuditCheckpoint, AuditEvent
from audit.services import audit_record, audit_seal


def record_event(number: int = 0, **fields) -> None:
    """Record one event through the real service, in its own transaction (pending until chained)."""
    with transaction.atomic():
        audit_record(
            event_type=fields.get("event_type", "workflow.instance.started"),
            action=fields.get("action", "started"),
            result=fields.get("result", "success"),
            resource=fields.get("resource", ("workflow-instance", f"wi-{number}")),
            actor=fields.get("actor", Actor(type="user", id="u-1", ip="10.0.0.1", name="alice")),
            context=fields.get("context", {"n": number}),
        )


def append_events(count: int, **fields) -> list[AuditEvent]:
    """Record `count` events, each in its own transaction and chained after it, as in production.

    Tests run inside a transaction that never commits, so the after-commit chaining is done here.
    """
    events = []
    for number in range(count):
        record_event(number, **fields)
        audit_seal()
        events.append(AuditEvent.objects.order_by("-id").first())
    return events


def sign_checkpoint(event: AuditEvent, created: datetime) -> AuditCheckpoint:
    """A validly signed checkpoint of `event` made at `created`: how tests put a checkpoint in the past."""
    signature = checkpoint_signature(
        key=settings.ELSA_AUDIT_CHECKPOINT_KEY, event_id=event.id, event_hash=event.hash, created=created
    )
    checkpoint = AuditCheckpoint(event_id=event.id, event_hash=event.hash, created=created, signature=signature)
    checkpoint.save()
    return checkpoint


@contextmanager
def triggers_disabled():
    """Switch off the append-only triggers, as an attacker with table-owner rights could."""
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER ALL")
        try:
            yield cursor
        finally:
            for table in TABLES:
                cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER ALL")


TABLES = ("audit_auditevent", "audit_auditcheckpoint", "audit_pendingauditevent")
