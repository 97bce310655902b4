"""Read a secret on stdin and print {"hash", "salt"} for ELSA_IDENTITY_FILE."""

import json
import secrets
import sys

from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError

from identity.apikeys import api_key_hash


class Command(BaseCommand):
    help = (
        "Hash a secret read from stdin for the identity file. Passwords and client secrets (the default) "
        "get Django's password hasher (Argon2: a slow KDF); --kind api-key gets HMAC-SHA256 under "
        "ELSA_API_KEY_PEPPER, like database API keys."
    )

    def add_arguments(self, parser):
        parser.add_argument("--kind", choices=["password", "client-secret", "api-key"], default="password")

    def handle(self, *args, kind: str, **options):
        # stdin, not an argument: a secret on the command line lands in shell history and `ps`.
        secret = sys.stdin.readline().rstrip("\r\n")
        if not secret:
            raise CommandError("No secret on stdin.")
        salt = secrets.token_hex(16)
        if kind == "api-key":
            hashed = api_key_hash(secret, salt)
        else:
            # Django's encoded hash embeds the salt; it is also printed apart for Elsa's file shape.
            hashed = make_password(secret, salt=salt)
        self.stdout.write(json.dumps({"hash": hashed, "salt": salt}))
