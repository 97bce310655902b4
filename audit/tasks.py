"""Celery entry points of the audit app."""

from audit.services import audit_checkpoint_create, audit_seal
from elsa_site.celery import app


@app.task(name="audit.checkpoint")
def audit_checkpoint() -> int | None:
    """Sign the chain head (run by beat); safe to run twice: an unchanged head is not signed again."""
    checkpoint = audit_checkpoint_create()
    return checkpoint.event_id if checkpoint else None


@app.task(name="audit.seal")
def audit_seal_pending() -> int:
    """Chain pending events a process left behind (killed between its commit and its own sealing)."""
    return audit_seal(flush=False)
