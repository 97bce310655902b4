from django.db import migrations

# purge_audit (audit.services.audit_purge) deletes the oldest events, through a signed checkpoint
# an archive holds. The append-only trigger lets such a DELETE through only when the setting
# elsa.audit_purge is '<this transaction's id>:<last event id to purge>', which audit_purge sets
# with set_config(..., true) (transaction-local) and resets after its DELETE: a value left in a
# session, or set in another transaction, never matches, and no event after that id can be
# deleted. Every other UPDATE or DELETE of events, and any change of checkpoints, is still refused.
PURGE_SQL = """
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    purge text;
BEGIN
    IF TG_OP = 'TRUNCATE' AND current_setting('elsa.audit_allow_truncate', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_auditevent' THEN
        purge := current_setting('elsa.audit_purge', true);
        IF purge IS NOT NULL AND split_part(purge, ':', 1) = pg_current_xact_id()::text THEN
            IF OLD.id <= split_part(purge, ':', 2)::bigint THEN
                RETURN OLD;
            END IF;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit rows are append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
"""

# The function as migration 0001 created it.
NO_PURGE_SQL = """
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND current_setting('elsa.audit_allow_truncate', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit rows are append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
"""


def allow_purge(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PURGE_SQL, params=None)


def refuse_purge(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(NO_PURGE_SQL, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0003_resource_id_index"),
    ]

    operations = [
        migrations.RunPython(allow_purge, refuse_purge, elidable=False),
    ]
