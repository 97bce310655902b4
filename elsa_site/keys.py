"""Secrets for settings: from the environment, generated once into var/ in development."""

import base64
import fcntl
import json
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

# Minimum lengths for values an operator supplies; shorter ones are refused in production.
MIN_SECRET_KEY_LENGTH = 50
MIN_SIGNING_KEY_LENGTH = 32
# Every text secret an operator may set, with its minimum length. The last two are optional: without
# them a value derived from ELSA_SECRET_KEY is used (optional_secret).
MIN_LENGTHS = {
    "ELSA_SECRET_KEY": MIN_SECRET_KEY_LENGTH,
    "ELSA_SIGNING_KEY": MIN_SIGNING_KEY_LENGTH,
    "ELSA_AUDIT_CHECKPOINT_KEY": 32,
    "ELSA_API_KEY_PEPPER": 32,
}
# Every secret (and the 32 bytes of each Fernet key) needs this many distinct characters and must not be
# a shorter run repeated: "a" * 32 or "0123456789" * 4 is long but guessable. A random hex string of
# 32 characters has fewer than 8 distinct ones with odds below one in ten million.
MIN_DISTINCT_CHARACTERS = 8

_GENERATORS = {
    "ELSA_SECRET_KEY": lambda: secrets.token_urlsafe(64),
    "ELSA_SIGNING_KEY": lambda: secrets.token_urlsafe(48),
    "ELSA_ENCRYPTION_KEYS": lambda: Fernet.generate_key().decode(),
}

_WEAK_VALUES = {"", "changeme", "secret", "insecure", "django-insecure", "password"}


def looks_random(value: str | bytes) -> bool:
    """At least MIN_DISTINCT_CHARACTERS distinct characters (or bytes), and not a shorter run repeated."""
    if len(set(value)) < MIN_DISTINCT_CHARACTERS:
        return False
    # Periodic with period p (whole or cut-off repeats of value[:p]) exactly when value[p:] == value[:-p].
    return not any(value[p:] == value[:-p] for p in range(1, len(value) // 2 + 1))


def validate_secret(name: str, value: str) -> None:
    """Raise ImproperlyConfigured naming the variable when a secret is missing or weak."""
    if value.strip().lower() in _WEAK_VALUES or value.startswith("django-insecure"):
        raise ImproperlyConfigured(f"{name} is missing or insecure; set a strong random value.")
    minimum = MIN_LENGTHS.get(name)
    if minimum is not None and (len(value) < minimum or not looks_random(value)):
        raise ImproperlyConfigured(f"{name} must be at least {minimum} random characters.")
    if name == "ELSA_ENCRYPTION_KEYS":
        message = f"{name} must be comma-separated random Fernet keys (32 url-safe base64 bytes each)."
        for key in value.split(","):
            try:
                Fernet(key.strip().encode())
                raw = base64.urlsafe_b64decode(key.strip().encode())
            except (ValueError, TypeError) as exc:
                # Never echo the key itself: only which variable is wrong.
                raise ImproperlyConfigured(message) from exc
            # Fernet accepts any 32 bytes, base64(bytes(32)) included.
            if not looks_random(raw):
                raise ImproperlyConfigured(message)


def load_secret(name: str, *, environ_value: str | None, production: bool, var_dir: Path) -> str:
    """Return the secret called `name`; generate it into var/ only outside production."""
    if environ_value:
        validate_secret(name, environ_value)
        return environ_value
    if production:
        raise ImproperlyConfigured(f"{name} is required when ELSA_ENV=production.")
    store = var_dir / "keys.json"
    var_dir.mkdir(parents=True, exist_ok=True)
    # make run starts web, worker and beat at once: a file lock makes them agree on one value.
    with open(var_dir / "keys.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stored: dict[str, str] = json.loads(store.read_text()) if store.exists() else {}
        if name not in stored:
            stored[name] = _GENERATORS[name]()
            # Mode 0600 from creation so no other user on the host can read the keys.
            tmp = store.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(stored, fh)
            os.replace(tmp, store)
    return stored[name]


def optional_secret(name: str, *, environ_value: str | None, derived: str) -> str:
    """An optional secret: the operator's value, checked like the required ones, else `derived`."""
    if environ_value:
        validate_secret(name, environ_value)
        return environ_value
    return derived
