"""System checks of the audit app: the checkpoint signing key and freshness settings, the append-only triggers."""

from django.conf import settings
from django.core.checks import Error, Tags, register
from django.db import connections

MIN_KEY_LENGTH = 32


@register(Tags.security)
def check_checkpoint_key(app_configs, **kwargs):
    """audit.E001: the checkpoint signing key is too short to resist guessing."""
    errors = []
    key = getattr(settings, "ELSA_AUDIT_CHECKPOINT_KEY", "") or ""
    if len(key) < MIN_KEY_LENGTH:
        errors.append(
            Error(
                f"ELSA_AUDIT_CHECKPOINT_KEY must be at least {MIN_KEY_LENGTH} characters.",
                hint="Generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'",
                id="audit.E001",
            )
        )
    return errors


@register(Tags.security)
def check_checkpoint_freshness(app_configs, **kwargs):
    """audit.E002: the checkpoint interval or allowed age would let a cut tail pass, or fail a sound chain."""
    interval = settings.ELSA_AUDIT_CHECKPOINT_INTERVAL_SECONDS
    max_age = settings.ELSA_AUDIT_CHECKPOINT_MAX_AGE_SECONDS
    # Two intervals at least: one late or skipped beat must not make a sound chain fail verification.
    if not (0 < interval and 2 * interval <= max_age):
        return [
            Error(
                "ELSA_AUDIT_CHECKPOINT_INTERVAL_SECONDS must be positive and ELSA_AUDIT_CHECKPOINT_MAX_AGE_SECONDS "
                f"at least twice it (they are {interval:g} and {max_age:g}).",
                hint="Unset ELSA_AUDIT_CHECKPOINT_MAX_AGE_SECONDS for the default, five intervals.",
                id="audit.E002",
            )
        ]
    return []


# Trigger names of migrations audit/0001 and 0002, per table.
APPEND_ONLY_TRIGGERS = {
    "audit_auditevent": ("audit_event_append_only", "audit_event_no_truncate"),
    "audit_auditcheckpoint": ("audit_checkpoint_append_only", "audit_checkpoint_no_truncate"),
    "audit_pendingauditevent": (
        "audit_pending_no_update",
        "audit_pending_no_truncate",
        "audit_pending_delete_by_chainer",
    ),
}


@register(Tags.security, Tags.database)
def check_append_only_triggers(app_configs, databases=None, **kwargs):
    """audit.E003: on PostgreSQL an append-only trigger is missing or disabled (run with --database)."""
    errors = []
    for alias in databases or []:
        connection = connections[alias]
        if connection.vendor != "postgresql":
            continue
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' AND c.relname = ANY(%s)",
                [list(APPEND_ONLY_TRIGGERS)],
            )
            active = set(cursor.fetchall())
        # Only tables that exist: a database not migrated yet (or not to the migration that adds
        # a table) has nothing to protect there, and `migrate` itself must not be refused.
        tables = _audit_tables(connection)
        expected = [(table, name) for table, names in APPEND_ONLY_TRIGGERS.items() if table in tables for name in names]
        missing = [f"{table}.{name}" for table, name in expected if (table, name) not in active]
        if missing:
            errors.append(
                Error(
                    f"Audit append-only triggers are missing or disabled on database {alias!r}: {', '.join(missing)}.",
                    hint="Re-enable them (ALTER TABLE ... ENABLE TRIGGER ALL) and run verify_audit_chain.",
                    id="audit.E003",
                )
            )
    return errors


def _audit_tables(connection) -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.table_names(cursor)) & set(APPEND_ONLY_TRIGGERS)
