"""External OIDC access tokens: RS256/ES256 verified against each configured issuer's cached JWKS."""

import json
import logging
import threading
import time
import urllib.request
from dataclasses import dataclass

import jwt
from django.conf import settings

from identity.principals import Principal

logger = logging.getLogger("elsa.identity")

# Asymmetric algorithms only, each bound to its key type: "none" and HS256 (which would let a
# public key be used as an HMAC secret) can never select a verifier.
ALGORITHM_KEY_TYPES = {"RS256": "RSA", "ES256": "EC"}
MAX_JWKS_BYTES = 1024 * 1024


@dataclass
class _KeySet:
    keys: dict[str, jwt.PyJWK]
    fetched_at: float  # time.monotonic()


@dataclass
class _IssuerState:
    key_set: _KeySet | None = None
    attempted_at: float = float("-inf")  # the last fetch started, whether it succeeded or not
    fetching: bool = False


_issuers: dict[str, _IssuerState] = {}
# Guards _issuers only; never held during a fetch.
_lock = threading.Lock()


def jwks_cache_clear() -> None:
    with _lock:
        _issuers.clear()


def issuer_config(issuer: str | None) -> dict | None:
    for config in settings.ELSA_OIDC_ISSUERS:
        if issuer and config.get("issuer") == issuer:
            return config
    return None


def _read_jwks(config: dict):
    if config.get("jwks_file"):
        with open(config["jwks_file"], encoding="utf-8") as fh:
            return json.load(fh)
    request = urllib.request.Request(config["jwks_url"], headers={"Accept": "application/json"})  # noqa: S310 - operator-configured URL
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        return json.loads(response.read(MAX_JWKS_BYTES + 1)[:MAX_JWKS_BYTES])


def _fetch(config: dict) -> _KeySet:
    """The issuer's keys by kid; ValueError (a failed fetch) when the document is not a JWK Set."""
    document = _read_jwks(config)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("the JWKS document is not an object with a list of keys")
    keys: dict[str, jwt.PyJWK] = {}
    for item in document["keys"]:
        if not isinstance(item, dict) or not isinstance(item.get("kid"), str) or not item["kid"]:
            continue
        try:
            key = jwt.PyJWK(item)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError, AttributeError):
            continue  # a key type or algorithm we do not accept, or a malformed key
        keys[item["kid"]] = key
    return _KeySet(keys, time.monotonic())


def _signing_key(config: dict, kid: str) -> jwt.PyJWK | None:
    issuer = config["issuer"]
    ttl = config.get("jwks_cache_seconds", settings.ELSA_OIDC_JWKS_CACHE_SECONDS)
    refetch_interval = settings.ELSA_OIDC_JWKS_REFETCH_SECONDS
    with _lock:
        state = _issuers.setdefault(issuer, _IssuerState())
        key_set = state.key_set
        now = time.monotonic()
        stale = key_set is None or now - key_set.fetched_at >= ttl
        # An unknown kid may mean the issuer rotated its keys. Whatever the reason, at most one fetch
        # per issuer at a time and none within ELSA_OIDC_JWKS_REFETCH_SECONDS of the last attempt,
        # failed ones included, so forged tokens cannot turn us into a request amplifier.
        unknown = key_set is not None and kid not in key_set.keys
        fetch = (stale or unknown) and not state.fetching and now - state.attempted_at >= refetch_interval
        if fetch:
            state.fetching = True
            state.attempted_at = now
    fetched: _KeySet | None = None
    if fetch:
        # Outside the lock: requests arriving meanwhile use the last good key set, or fail at once.
        try:
            fetched = _fetch(config)
        except (OSError, ValueError):
            # Keep serving the last good key set, if any, while the issuer is unreachable.
            logger.warning("could not fetch the JWKS of an OIDC issuer", extra={"issuer": issuer})
            if key_set is not None and not _usable(key_set, ttl, time.monotonic()):
                # Logged once per failed attempt (at most once per ELSA_OIDC_JWKS_REFETCH_SECONDS), not per token.
                logger.error(
                    "the JWKS of an OIDC issuer is past ELSA_OIDC_JWKS_MAX_STALE_SECONDS; its tokens are refused",
                    extra={"issuer": issuer},
                )
        finally:
            with _lock:
                state.fetching = False
        if fetched is not None:
            with _lock:
                state.key_set = key_set = fetched
    # A key set this request fetched is fresh; an older one must be within the staleness bound.
    if key_set is None or (fetched is None and not _usable(key_set, ttl, time.monotonic())):
        return None
    return key_set.keys.get(kid)


def _usable(key_set: _KeySet, ttl: float, now: float) -> bool:
    """Whether a key set may still verify tokens: within its cache lifetime plus the staleness bound.

    Past its lifetime a key set is only kept because the issuer cannot be reached, and only for
    ELSA_OIDC_JWKS_MAX_STALE_SECONDS: a key the issuer has since withdrawn (rotated out after a
    leak) must not go on verifying tokens for as long as someone keeps us from reaching the issuer.
    """
    return now - key_set.fetched_at <= ttl + settings.ELSA_OIDC_JWKS_MAX_STALE_SECONDS


def permissions_from_claims(claims: dict) -> frozenset[str]:
    """Map the token's roles, groups and scopes through ELSA_OIDC_PERMISSION_MAP."""
    names: set[str] = set()
    for claim in ("roles", "groups", "scp"):
        value = claims.get(claim)
        if isinstance(value, list):
            names.update(str(v) for v in value)
        elif isinstance(value, str):
            names.update(value.split())
    realm_roles = (
        (claims.get("realm_access") or {}).get("roles") if isinstance(claims.get("realm_access"), dict) else None
    )
    if isinstance(realm_roles, list):
        names.update(str(v) for v in realm_roles)
    if isinstance(claims.get("scope"), str):
        names.update(claims["scope"].split())
    mapping = settings.ELSA_OIDC_PERMISSION_MAP
    return frozenset(p for name in names for p in mapping.get(name, []))


def oidc_principal(token: str, issuer: str | None) -> Principal | None:
    """The user principal of a valid access token of a configured issuer, else None."""
    config = issuer_config(issuer)
    if config is None:
        return None
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return None
    algorithm = header.get("alg")
    kid = header.get("kid")
    if algorithm not in ALGORITHM_KEY_TYPES or not isinstance(kid, str):
        return None
    key = _signing_key(config, kid)
    if key is None or key.key_type != ALGORITHM_KEY_TYPES[algorithm]:
        return None
    try:
        claims = jwt.decode(
            token,
            key.key,
            algorithms=[algorithm],
            audience=config["audience"],
            issuer=config["issuer"],
            leeway=settings.ELSA_OIDC_LEEWAY_SECONDS,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except jwt.PyJWTError:
        return None
    subject = str(claims["sub"])
    return Principal(
        actor_type="user",
        actor_id=f"{issuer}|{subject}",
        actor_name=str(claims.get("preferred_username") or claims.get("email") or subject),
        permissions=permissions_from_claims(claims),
        source="oidc",
    )
