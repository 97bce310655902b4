"""Our JWTs (simplejwt): issuing access/refresh pairs, verifying access tokens from their claims."""

import time
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone
from rest_framework_simplejwt.exceptions import TokenBackendError, TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.state import token_backend
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken
from rest_framework_simplejwt.utils import datetime_from_epoch

from identity import invalidation
from identity.principals import Principal

CONFIG_ID_PREFIX = "config:"


@dataclass(frozen=True)
class TokenSubject:
    """Who a token is issued to: the claims both tokens of a pair carry."""

    actor_type: str  # "user" or "application"
    actor_id: str
    actor_name: str
    permissions: frozenset[str]


def _stamp(token, subject: TokenSubject) -> None:
    token[jwt_settings.USER_ID_CLAIM] = subject.actor_id
    token["name"] = subject.actor_name
    token["principal_type"] = subject.actor_type


def access_token_issue(subject: TokenSubject) -> AccessToken:
    access = AccessToken()
    _stamp(access, subject)
    # One entry per permission: authorization needs nothing but these claims.
    access["permissions"] = sorted(subject.permissions)
    return access


FAMILY_MARKER = "family:"


def token_pair_issue(subject: TokenSubject, *, family: str | None = None) -> dict:
    """{access_token, refresh_token, expires_in}; the refresh token is recorded as outstanding.

    Every refresh token of one login shares a family id (`fam`), so a reused one can revoke the chain.
    """
    refresh = RefreshToken()
    _stamp(refresh, subject)
    refresh["fam"] = family or refresh[jwt_settings.JTI_CLAIM]
    access = access_token_issue(subject)
    OutstandingToken.objects.create(
        user_id=int(subject.actor_id) if subject.actor_type == "user" and subject.actor_id.isdigit() else None,
        jti=refresh[jwt_settings.JTI_CLAIM],
        # The token itself is a credential and is never stored; this column keeps its family id.
        token=FAMILY_MARKER + refresh["fam"],
        created_at=refresh.current_time,
        expires_at=datetime_from_epoch(refresh["exp"]),
    )
    return {
        "access_token": str(access),
        "refresh_token": str(refresh),
        "token_type": "Bearer",
        "expires_in": int(jwt_settings.ACCESS_TOKEN_LIFETIME.total_seconds()),
    }


def refresh_token_verify(raw: str) -> dict | None:
    """The claims of a well-signed, unexpired refresh token (never an access token), else None.

    The blacklist is not consulted here: the caller tells a first use from a reuse.
    """
    try:
        # Signature, exp, iss and aud are verified by the token backend (HS256 only).
        payload = token_backend.decode(raw, verify=True)  # type: ignore[arg-type]  # str at run time
    except TokenBackendError:
        return None
    # An access token is refused here, as a refresh token is refused by AccessToken below.
    if payload.get(jwt_settings.TOKEN_TYPE_CLAIM) != "refresh" or not payload.get(jwt_settings.JTI_CLAIM):
        return None
    return payload


def refresh_token_subject(payload: dict) -> tuple[str, str]:
    return payload.get("principal_type", ""), str(payload.get(jwt_settings.USER_ID_CLAIM, ""))


def refresh_token_family(payload: dict) -> str:
    return str(payload.get("fam") or payload[jwt_settings.JTI_CLAIM])


def refresh_token_use(payload: dict) -> bool:
    """Blacklist the token; False if it already was (a repeated or concurrent use)."""
    jti = payload[jwt_settings.JTI_CLAIM]
    with transaction.atomic():
        outstanding, _ = OutstandingToken.objects.get_or_create(
            jti=jti,
            defaults={
                "token": FAMILY_MARKER + refresh_token_family(payload),
                "created_at": timezone.now(),
                "expires_at": datetime_from_epoch(payload["exp"]),
            },
        )
        # BlacklistedToken.token is one-to-one: of two concurrent uses, exactly one creates it
        # (on PostgreSQL the second insert waits for the first transaction, then fails).
        _, created = BlacklistedToken.objects.get_or_create(token=outstanding)
    return created


def _outstanding_revoke(outstanding_tokens) -> int:
    revoked = 0
    for outstanding in outstanding_tokens.filter(blacklistedtoken__isnull=True):
        _, created = BlacklistedToken.objects.get_or_create(token=outstanding)
        revoked += int(created)
    return revoked


def token_family_revoke(family: str) -> int:
    """Blacklist every outstanding refresh token of a family (reuse detected, or logout)."""
    return _outstanding_revoke(OutstandingToken.objects.filter(token=FAMILY_MARKER + family))


def user_refresh_tokens_revoke(user_id: int) -> int:
    """Blacklist every outstanding refresh token of a database user (its password was changed)."""
    return _outstanding_revoke(OutstandingToken.objects.filter(user_id=user_id))


def _principal_valid_until(actor_type: str, actor_id: str) -> float | None | bool:
    """False if the principal is disabled or gone; else its expiry (epoch seconds) or None."""
    from identity import config_file
    from identity.models import Application, User

    if actor_id.startswith(CONFIG_ID_PREFIX):
        return None if config_file.config_principal_exists(actor_type, actor_id) else False
    if not actor_id.isdigit():
        return False
    if actor_type == "user":
        return None if User.objects.filter(pk=int(actor_id), is_active=True).exists() else False
    if actor_type == "application":
        app = Application.objects.filter(pk=int(actor_id), enabled=True).only("expires_at").first()
        if app is None:
            return False
        return app.expires_at.timestamp() if app.expires_at else None
    return False


def principal_is_active(actor_type: str, actor_id: str) -> bool:
    """Whether a token's principal is still enabled: cached per process, invalidated by push."""
    invalidation.listener.ensure_started()
    key = f"{actor_type}:{actor_id}"
    tags = {key}
    if actor_id.startswith(CONFIG_ID_PREFIX):
        from identity import config_file

        # A principal of the identity file is removed by editing the file: a stat per request notices
        # a new version at once and drops the states cached from the old one.
        config_file.identity_file_refresh()
        tags.add(config_file.FILE_TAG)
    cached = invalidation.cache.get(f"state:{key}")
    if cached is None:
        generation = invalidation.cache.generation
        cached = (_principal_valid_until(actor_type, actor_id),)
        invalidation.cache.put(f"state:{key}", cached, tags=tags, if_generation=generation)
    (state,) = cached
    if state is False:
        return False
    return state is None or state > time.time()


# Verified access tokens kept per process, so a repeated token costs a dict lookup, not an HMAC
# and two JSON decodes. Only tokens that verified are kept; the bound stops a flood of them.
VERIFIED_TOKENS_MAX = 10_000


def cached_access_token_principal(raw: str) -> Principal | None:
    """The principal of an access token this process verified before, if still valid."""
    cached = invalidation.cache.get(f"jwt:{raw}")
    if cached is None:
        return None
    principal, expires = cached
    if expires <= time.time() or not principal_is_active(principal.actor_type, principal.actor_id):
        return None
    return principal


def access_token_principal(raw: str) -> Principal | None:
    """The principal of a valid access token, from its claims only (no per-request query)."""
    principal = cached_access_token_principal(raw)
    if principal is not None:
        return principal
    generation = invalidation.cache.generation
    try:
        token = AccessToken(raw)  # type: ignore[arg-type]  # simplejwt's stubs say Token; it takes str
    except TokenError:
        return None
    actor_type = token.get("principal_type")
    actor_id = str(token.get(jwt_settings.USER_ID_CLAIM, ""))
    permissions = token.get("permissions")
    if actor_type not in ("user", "application") or not actor_id or not isinstance(permissions, list):
        return None
    if not principal_is_active(actor_type, actor_id):
        return None
    principal = Principal(
        actor_type=actor_type,
        actor_id=actor_id,
        actor_name=str(token.get("name", "")),
        permissions=frozenset(str(p) for p in permissions),
        source="jwt",
    )
    if len(invalidation.cache) > VERIFIED_TOKENS_MAX:
        invalidation.cache.clear()
    invalidation.cache.put(
        f"jwt:{raw}", (principal, float(token["exp"])), tags={f"{actor_type}:{actor_id}"}, if_generation=generation
    )
    return principal
