"""Make sure an administrator exists; print a generated password once, store only its hash."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from identity.models import Role


class Command(BaseCommand):
    help = "Create the 'admin' superuser with a generated password if no superuser exists."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username: str, **options):
        User = get_user_model()
        # The migration creates it; get_or_create keeps the command safe on a hand-edited database.
        admin_role, _ = Role.objects.get_or_create(name="admin", defaults={"permissions": ["*"]})
        existing = User.objects.filter(is_superuser=True).order_by("pk").first()
        if existing is not None:
            existing.roles.add(admin_role)
            self.stdout.write("An administrator already exists.")
            return
        password = secrets.token_urlsafe(18)
        user = User.objects.create_superuser(username=username, email="", password=password)
        # The API authorizes by role: the admin role carries "*".
        user.roles.add(admin_role)
        # Printed once to the operator's terminal; only the Argon2 hash is stored.
        self.stdout.write(f"Created administrator '{username}' with password: {password}")
        self.stdout.write("This password is shown once. Change it in the admin after signing in.")
