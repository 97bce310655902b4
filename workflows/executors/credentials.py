"""Authentication settings per type: validation, the secret/non-secret split, encryption and masking."""

import json
from dataclasses import dataclass
from typing import Any

from elsa_site.errors import InvalidInput
from workflows.encryption import InvalidToken, decrypt, encrypt
from workflows.executors.client import PermanentError
from workflows.executors.models import AuthType, Executor

MASK = "****"


@dataclass(frozen=True)
class AuthSchema:
    """The fields one authentication type accepts: which are secret, which are required."""

    public: tuple[str, ...]
    secret: tuple[str, ...]
    required: tuple[str, ...]


# Keyed by AuthType members, which are str values: lookups by the plain string work too.
SCHEMAS: dict[Any, AuthSchema] = {
    AuthType.NONE: AuthSchema(public=(), secret=(), required=()),
    AuthType.API_KEY: AuthSchema(public=("header", "prefix", "query_param"), secret=("key",), required=("key",)),
    AuthType.BEARER: AuthSchema(public=(), secret=("token",), required=("token",)),
    AuthType.BASIC: AuthSchema(public=("username",), secret=("password",), required=("username", "password")),
    AuthType.OIDC_CLIENT_CREDENTIALS: AuthSchema(
        public=("issuer", "client_id", "token_endpoint_auth_method", "scopes", "audience"),
        secret=("client_secret",),
        required=("issuer", "client_id", "client_secret"),
    ),
    AuthType.OIDC_USER: AuthSchema(
        public=("issuer", "client_id", "token_endpoint_auth_method", "scopes", "audience", "username"),
        secret=("client_secret", "password", "refresh_token"),
        required=("issuer", "client_id"),
    ),
}
TOKEN_ENDPOINT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")


def mask(value: str, *, reveal_tail: bool = True) -> str:
    """ "****" plus at most the last 4 characters, and those only for values long enough to spare them."""
    if not value:
        return ""
    tail = value[-4:] if reveal_tail and len(value) >= 16 else ""
    return MASK + tail


def is_masked(value) -> bool:
    """A value echoed back from a masked response: it means "keep the stored secret"."""
    return isinstance(value, str) and value.startswith(MASK)


def split_config(auth_type: str, config: dict, *, current_secrets: dict | None = None) -> tuple[dict, dict]:
    """Validate `config` for `auth_type` and split it into (public, secret) parts.

    A secret field left out, or sent back masked, keeps its current value, so an update that
    only renames a header does not have to (and cannot accidentally) resend credentials.
    """
    if auth_type not in SCHEMAS:
        raise InvalidInput("Unknown authentication type.", details={"authentication.type": list(SCHEMAS)})
    if not isinstance(config, dict):
        raise InvalidInput("authentication.config must be an object.")
    schema = SCHEMAS[auth_type]
    unknown = sorted(set(config) - set(schema.public) - set(schema.secret))
    if unknown:
        raise InvalidInput("Unknown authentication fields.", details={"authentication.config": unknown})
    public = {k: config[k] for k in schema.public if config.get(k) not in (None, "")}
    secrets = {}
    for name in schema.secret:
        value = config.get(name)
        if value is None or value == "" or is_masked(value):
            if current_secrets and current_secrets.get(name):
                secrets[name] = current_secrets[name]
            continue
        if not isinstance(value, str):
            raise InvalidInput("Secret fields must be strings.", details={"authentication.config": [name]})
        secrets[name] = value
    # Names only in the error: the values are secrets. A control character (a pasted trailing
    # newline) cannot travel in a header; refused now rather than failing every call later.
    garbled = sorted(name for name, value in {**public, **secrets}.items() if _has_control_character(value))
    if garbled:
        raise InvalidInput(
            "Authentication fields may not contain control characters (a pasted line break?).",
            details={"authentication.config": garbled},
        )
    missing = [name for name in schema.required if name not in public and name not in secrets]
    if missing:
        raise InvalidInput("Missing authentication fields.", details={"authentication.config": missing})
    _validate_public(auth_type, public)
    if auth_type == AuthType.OIDC_USER and not (secrets.get("refresh_token") or secrets.get("password")):
        raise InvalidInput("oidc_user needs a refresh_token, or a username and password.")
    if auth_type == AuthType.OIDC_USER and secrets.get("password") and not public.get("username"):
        raise InvalidInput("oidc_user's password grant needs a username.")
    return public, secrets


def _has_control_character(value) -> bool:
    values = value if isinstance(value, list) else [value]
    return any(isinstance(v, str) and any(ord(c) < 0x20 or ord(c) == 0x7F for c in v) for v in values)


def _validate_public(auth_type: str, public: dict) -> None:
    for name, value in public.items():
        if name == "scopes":
            if not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(s, str) for s in value))):
                raise InvalidInput("scopes must be a string or a list of strings.")
        elif not isinstance(value, str):
            raise InvalidInput("Authentication fields must be strings.", details={"authentication.config": [name]})
    method = public.get("token_endpoint_auth_method")
    if method and method not in TOKEN_ENDPOINT_AUTH_METHODS:
        details = {"token_endpoint_auth_method": TOKEN_ENDPOINT_AUTH_METHODS}
        raise InvalidInput("Unsupported token endpoint auth method.", details=details)
    for header_field in ("header", "query_param"):
        value = public.get(header_field, "")
        if value and not all(c.isalnum() or c in "-_." for c in value):
            raise InvalidInput(f"{header_field} may hold only letters, digits, '-', '_' and '.'.")
    if auth_type == AuthType.API_KEY and public.get("header") and public.get("query_param"):
        raise InvalidInput("api_key takes a header or a query_param, not both.")
    issuer = public.get("issuer", "")
    if issuer and not issuer.startswith(("https://", "http://")):
        raise InvalidInput("issuer must be an http(s) URL.")


def encrypt_secrets(secrets: dict) -> str:
    return encrypt(json.dumps(secrets, sort_keys=True)) if secrets else ""


class CredentialsUnreadable(PermanentError):
    """Stored credentials no listed key decrypts (a key was removed from ELSA_ENCRYPTION_KEYS)."""


def _decrypt(ciphertext: str) -> str:
    try:
        return decrypt(ciphertext)
    except InvalidToken as exc:
        raise CredentialsUnreadable(
            "The executor's credentials cannot be decrypted with ELSA_ENCRYPTION_KEYS; enter them again."
        ) from exc


def executor_secrets(executor: Executor) -> dict:
    """The decrypted secret fields of an executor's authentication (outbound call path only)."""
    if not executor.auth_secrets_encrypted:
        return {}
    return json.loads(_decrypt(executor.auth_secrets_encrypted))


def executor_client_key(executor: Executor) -> str:
    return _decrypt(executor.tls_client_key_encrypted) if executor.tls_client_key_encrypted else ""


def masked_authentication(executor: Executor) -> dict:
    """The authentication settings as shown to API and admin users: secrets masked."""
    config = dict(executor.auth_config)
    try:
        secrets = executor_secrets(executor)
    except CredentialsUnreadable:
        # Still listable, so an operator can find and fix it; the masked names are all we could show.
        secrets = {name: "" for name in SCHEMAS[executor.auth_type].secret}
        config["credentials_unreadable"] = True
    for name, value in secrets.items():
        config[name] = mask(value) if value else MASK
    return {"type": executor.auth_type, "config": config}


def masked_tls(executor: Executor) -> dict:
    # A PEM key's last characters are its armour line: show only that a key is set.
    return {
        "client_certificate": executor.tls_client_certificate,
        "client_key": MASK if executor.tls_client_key_encrypted else "",
        "ca_bundle": executor.tls_ca_bundle,
    }
