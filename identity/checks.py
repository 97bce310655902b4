"""Identity system checks (identity.E0xx): identity file, its overlap with the database, OIDC issuers."""

import re
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Tags, register
from django.db import DatabaseError

from identity.config_file import IdentityFileError, conflicts_with_database, identity_file


@register(Tags.security)
def check_identity_file(app_configs=None, **kwargs) -> list[Error]:
    """E002: the identity file must parse; E001: no name or client id both in it and in the database."""
    if not getattr(settings, "ELSA_IDENTITY_FILE", ""):
        return []
    try:
        identity_file()
    except IdentityFileError as exc:
        return [Error(str(exc), hint="Fix or unset ELSA_IDENTITY_FILE.", id="identity.E002")]
    try:
        conflicts = conflicts_with_database()
    except DatabaseError:
        # Before the first migrate there is nothing to conflict with.
        return []
    if conflicts:
        return [
            Error(
                f"Identities defined both in ELSA_IDENTITY_FILE and in the database: {', '.join(conflicts)}.",
                hint="Each user, application name and client id must live in exactly one place: "
                "rename or delete one of them.",
                id="identity.E001",
            )
        ]
    return []


@register(Tags.security)
def check_oidc_issuers(app_configs=None, **kwargs) -> list[Error]:
    """E003: every OIDC issuer names issuer, audience and a JWKS source; E004: https JWKS in production."""
    errors = []
    issuers = getattr(settings, "ELSA_OIDC_ISSUERS", [])
    if not isinstance(issuers, list):
        return [Error("ELSA_OIDC_ISSUERS must be a JSON list.", id="identity.E003")]
    for index, issuer in enumerate(issuers):
        if (
            not isinstance(issuer, dict)
            or not issuer.get("issuer")
            or not issuer.get("audience")
            or not (issuer.get("jwks_url") or issuer.get("jwks_file"))
        ):
            errors.append(
                Error(
                    f"ELSA_OIDC_ISSUERS[{index}] needs issuer, audience and jwks_url or jwks_file.",
                    id="identity.E003",
                )
            )
            continue
        production = getattr(settings, "ELSA_ENV", "development") == "production"
        if production and issuer.get("jwks_url") and urlsplit(issuer["jwks_url"]).scheme != "https":
            errors.append(
                Error(
                    f"ELSA_OIDC_ISSUERS[{index}] fetches its JWKS over plain HTTP in production.",
                    hint="A network attacker could substitute signing keys: use https.",
                    id="identity.E004",
                )
            )
    return errors


# An issuer unreachable for longer than this is down, not flapping: its old keys must stop verifying.
MAX_JWKS_STALE_LIMIT = 7 * 86400


@register(Tags.security)
def check_oidc_jwks_staleness(app_configs=None, **kwargs) -> list[Error]:
    """E005: stale JWKS keys are accepted for a bounded time (0 to 7 days past their cache lifetime)."""
    value = getattr(settings, "ELSA_OIDC_JWKS_MAX_STALE_SECONDS", None)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_JWKS_STALE_LIMIT:
        return [
            Error(
                f"ELSA_OIDC_JWKS_MAX_STALE_SECONDS must be a whole number of seconds from 0 to {MAX_JWKS_STALE_LIMIT}.",
                hint="It bounds how long an unreachable issuer's last keys keep verifying tokens.",
                id="identity.E005",
            )
        ]
    return []


# django-ratelimit's grammar: "<count>/<multiplier?><s|m|h|d>", e.g. "10/m" or "5/10s".
_RATE = re.compile(r"^[1-9]\d*/([1-9]\d*)?[smhd]$")


@register(Tags.security)
def check_rates(app_configs=None, **kwargs) -> list[Error]:
    """E006: the login and failed API key limits are rates django-ratelimit understands."""
    return [
        Error(
            f"{name} is not a rate like '10/m'.",
            hint="Credential guessing and floods of made-up credentials are limited per client IP with it.",
            id="identity.E006",
        )
        for name in ("ELSA_LOGIN_RATE", "ELSA_API_KEY_FAILURE_RATE")
        if not _RATE.match(str(getattr(settings, name, "")))
    ]
