"""Celery entry points of the identity app."""

from elsa_site.celery import app


@app.task(name="identity.flush_expired_tokens")
def identity_flush_expired_tokens() -> int:
    """Delete refresh-token rows past their expiry (run by beat); idempotent."""
    from identity.services import expired_tokens_flush

    return expired_tokens_flush()
