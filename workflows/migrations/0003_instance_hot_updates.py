"""Steps update an instance's row in place: no index on updated_at, and room on each page.

Every step writes updated_at, the run state and the counters. With updated_at in an index, each
step's UPDATE added an entry to every index of the table (seven); without it, and with free room
on the row's page (fillfactor 70), PostgreSQL updates the row in place (a heap-only tuple). The
status index now pairs status with created_at, the order the instance list is read in; the
stalled-instance sweep reads the Running instances through it and checks updated_at on each row.
"""

from django.db import migrations, models

FILLFACTOR = 70


def set_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE workflows_workflowinstance SET (fillfactor = {FILLFACTOR})")


def reset_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE workflows_workflowinstance RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("workflows", "0002_execution_instance_index")]

    operations = [
        migrations.RemoveIndex(model_name="workflowinstance", name="wf_instance_status_idx"),
        migrations.AddIndex(
            model_name="workflowinstance",
            index=models.Index(fields=["status", "created_at"], name="wf_instance_status_created_idx"),
        ),
        migrations.RunPython(set_fillfactor, reset_fillfactor, elidable=False),
    ]
