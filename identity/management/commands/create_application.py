"""Create an application and print its credentials once, as JSON."""

import json

from django.core.management.base import BaseCommand, CommandError

from audit.actors import Actor
from elsa_site.errors import DomainError
from identity.services import application_create


class Command(BaseCommand):
    help = 'Create an application and print {"client_id", "client_secret", "api_key"} once; only hashes are stored.'

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--role", action="append", default=[], help="Role name; repeat for several.")

    def handle(self, *args, name: str, role: list[str], **options):
        try:
            application, client_secret, api_key = application_create(
                name=name, roles=role, actor=Actor.system("create_application"), caller_permissions=None
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            json.dumps({"client_id": application.client_id, "client_secret": client_secret, "api_key": api_key})
        )
