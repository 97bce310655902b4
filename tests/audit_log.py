"""Reading the audit log in tests: chain what has been recorded, then query the chain."""

from audit.models import AuditEvent
from audit.services import audit_seal


def chained_events():
    """The AuditEvent manager, after chaining every pending event.

    In production each process chains its events right after its transaction commits. Most tests
    run inside one transaction that is rolled back, never committed, so they chain before reading.
    """
    audit_seal()
    return AuditEvent.objects
