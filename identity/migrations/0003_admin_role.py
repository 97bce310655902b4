"""Create the built-in role `admin` holding the single permission `*` (CONTRACT.md)."""

from django.db import migrations


def create_admin_role(apps, schema_editor):
    Role = apps.get_model("identity", "Role")
    Role.objects.get_or_create(name="admin", defaults={"permissions": ["*"], "description": "Every permission."})


class Migration(migrations.Migration):
    dependencies = [
        ("identity", "0002_roles_applications"),
    ]

    operations = [
        migrations.RunPython(create_admin_role, migrations.RunPython.noop),
    ]
