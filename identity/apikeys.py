"""API keys: generation, keyed hashing and cached verification to a principal."""

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from identity import invalidation
from identity.principals import Principal

KEY_PREFIX = "elsa"
# How often (per key and process) last_used_at is written: a write per request would cost more
# than the whole verification.
LAST_USED_WRITE_INTERVAL = 60.0


@dataclass(frozen=True)
class NewApiKey:
    """A freshly generated key: `plaintext` is shown once and never stored."""

    plaintext: str
    key_id: str
    salt: str
    key_hash: str


def api_key_hash(secret: str, salt: str) -> str:
    """HMAC-SHA256 under the server-side pepper of salt + secret.

    No slow KDF (PBKDF2, Argon2) on purpose: the secret is 256 random bits, so there is no
    dictionary to slow down and brute force is already out of reach; a KDF would only spend
    tens of milliseconds of CPU on every API request. The pepper (ELSA_API_KEY_PEPPER, not in
    the database) makes a stolen table useless without the server's configuration.
    """
    pepper = settings.ELSA_API_KEY_PEPPER.encode()
    return hmac.new(pepper, (salt + secret).encode(), hashlib.sha256).hexdigest()


def api_key_generate() -> NewApiKey:
    # 16 hex characters of key id for the indexed lookup; token_urlsafe(32) = 256 bits of secret.
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    return NewApiKey(f"{KEY_PREFIX}_{key_id}_{secret}", key_id, salt, api_key_hash(secret, salt))


def api_key_parse(key: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed key, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 16 or len(parts[2]) < 43:
        return None
    return parts[1], parts[2]


@dataclass(frozen=True)
class VerifiedKey:
    """What the cache keeps for a key: its hash (never the key), principal and validity."""

    salt: str
    key_hash: str
    principal: Principal | None  # None: the key exists but its application or key is unusable
    valid_until: float | None  # epoch seconds: the earliest of key and application expiry
    key_pk: int | None
    application_pk: int | None


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _load(key_id: str) -> VerifiedKey | None:
    from identity.models import ApiKey

    row = (
        ApiKey.objects.select_related("application")
        .filter(key_id=key_id, revoked_at__isnull=True)
        .only(
            "pk",
            "salt",
            "key_hash",
            "expires_at",
            "application__id",
            "application__name",
            "application__enabled",
            "application__expires_at",
        )
        .first()
    )
    if row is None:
        return None
    app = row.application
    deadlines = [d for d in (_epoch(row.expires_at), _epoch(app.expires_at)) if d is not None]
    principal = None
    if app.enabled:
        principal = Principal(
            actor_type="application",
            actor_id=str(app.pk),
            actor_name=app.name,
            permissions=frozenset(p for role in app.roles.all() for p in (role.permissions or [])),
            source="apikey",
        )
    return VerifiedKey(row.salt, row.key_hash, principal, min(deadlines) if deadlines else None, row.pk, app.pk)


_last_used: dict[int, float] = {}
_last_used_lock = threading.Lock()


def _touch(verified: VerifiedKey) -> None:
    if verified.key_pk is None:  # configuration-file keys have no row to stamp
        return
    now = time.monotonic()
    with _last_used_lock:
        if now - _last_used.get(verified.key_pk, -LAST_USED_WRITE_INTERVAL) < LAST_USED_WRITE_INTERVAL:
            return
        _last_used[verified.key_pk] = now
    from identity.models import ApiKey, Application

    stamp = timezone.now()
    ApiKey.objects.filter(pk=verified.key_pk).update(last_used_at=stamp)
    Application.objects.filter(pk=verified.application_pk).update(last_used_at=stamp)


def api_key_verify(key: str, *, cached_only: bool = False) -> Principal | None:
    """The application principal of a valid database API key, else None.

    `cached_only` answers from this process's verification cache alone: None for a key it has not
    loaded, without a query.
    """
    parsed = api_key_parse(key)
    if parsed is None:
        return None
    key_id, secret = parsed
    invalidation.listener.ensure_started()
    cache_key = f"apikey:{key_id}"
    verified = invalidation.cache.get(cache_key)
    if verified is None:
        if cached_only:
            return None
        generation = invalidation.cache.generation
        verified = _load(key_id)
        if verified is None:
            return None
        invalidation.cache.put(
            cache_key,
            verified,
            tags={cache_key, f"application:{verified.application_pk}", "roles"},
            if_generation=generation,
        )
    # Constant-time comparison of the keyed hashes: timing reveals nothing about the stored hash.
    if not hmac.compare_digest(api_key_hash(secret, verified.salt), verified.key_hash):
        return None
    if verified.principal is None:
        return None
    if verified.valid_until is not None and verified.valid_until <= time.time():
        return None
    _touch(verified)
    return verified.principal
