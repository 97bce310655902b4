"""Celery entry points of the audit app."""

from audit.services import audit_checkpoint_create
from elsa_site.celery import app


@app.task(name="audit.checkpoint")
def audit_checkpoint() -> int | None:
    """Sign the chain head (run by beat); safe to run twice: an unchanged head is not signed again."""
    checkpoint = audit_checkpoint_create()
    return checkpoint.event_id if checkpoint else None
