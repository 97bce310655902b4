"""OIDC access tokens for executors: discovery, client-credentials / refresh / password grants, one shared cache."""

import base64
import hashlib
import json
import re
import time
import uuid
from urllib.parse import quote, urlencode

from django.conf import settings
from django.core.cache import cache

from workflows.encryption import InvalidToken, decrypt, encrypt
from workflows.executors.breaker import BreakerConfig, IdentityProviderBreaker
from workflows.executors.client import PermanentError, Response, TlsMaterial, TransientError, send
from workflows.executors.models import AuthType, Executor

DISCOVERY_TTL_SECONDS = 3600
MAX_TOKEN_CACHE_SECONDS = 86400
TOKEN_REQUEST_TIMEOUT = 10.0
# Long enough for discovery plus a refresh and a password grant (timeout above each) to finish;
# a crashed holder frees the lock by expiry.
LOCK_TTL_SECONDS = 45
LOCK_WAIT_SECONDS = 45.0
# What an OAuth error code looks like in practice (invalid_client, invalid_grant, ...); anything else
# is not reported, since it could be a description in disguise.
ERROR_CODE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class TokenError(PermanentError):
    """The identity provider refused to issue a token (bad client, bad grant): retrying cannot help."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        # The provider's answer, when it gave one: then it is up, whatever it said.
        self.status = status


class TokenUnavailable(TransientError):
    """No token now (provider down, or another worker's fetch did not finish in time): retry later."""


def _send_to_provider(what: str, method: str, url: str, executor: Executor, **kwargs) -> Response:
    """One request to the identity provider; its transport failures are reported as the provider's, not a partner's."""
    try:
        return send(method, url, internal=executor.internal, timeout=TOKEN_REQUEST_TIMEOUT, tls=_tls(executor),
                    max_bytes=256 * 1024, **kwargs)  # fmt: skip
    except TransientError as exc:
        raise TokenUnavailable(f"{what} could not be reached: {exc}") from exc
    except PermanentError as exc:
        raise TokenError(f"{what} could not be reached: {exc}") from exc


def _fingerprint(executor: Executor, secrets: dict) -> str:
    # Any change to issuer, client, scopes or secrets yields a new cache entry: no stale token
    # survives a credential rotation.
    material = json.dumps([str(executor.id), executor.auth_type, executor.auth_config, secrets], sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _scope(config: dict) -> str:
    scopes = config.get("scopes") or ""
    return " ".join(scopes) if isinstance(scopes, list) else scopes


def _tls(executor: Executor) -> TlsMaterial:
    # The identity provider is verified with the executor's CA bundle when one is set.
    return TlsMaterial(ca_bundle=executor.tls_ca_bundle, cache_key=f"idp:{executor.id}:{executor.updated_at}")


def token_endpoint(executor: Executor) -> str:
    """The issuer's token endpoint from its discovery document (cached)."""
    issuer = executor.auth_config["issuer"].rstrip("/")
    key = f"executors:oidc-discovery:{hashlib.sha256(issuer.encode()).hexdigest()[:32]}"
    endpoint = cache.get(key)
    if endpoint:
        return endpoint
    response = _send_to_provider(
        f"OIDC discovery at {issuer}",
        "GET",
        f"{issuer}/.well-known/openid-configuration",
        executor,
        headers={"Accept": "application/json"},
    )
    if response.status >= 500 or response.status == 429:
        raise TokenUnavailable(f"OIDC discovery at {issuer} answered {response.status}.")
    document = response.body if isinstance(response.body, dict) else {}
    endpoint = document.get("token_endpoint")
    # The document must describe the issuer we asked, or a hijacked discovery URL could point us anywhere.
    if response.status != 200 or document.get("issuer", "").rstrip("/") != issuer or not isinstance(endpoint, str):
        raise TokenError(
            f"OIDC discovery at {issuer} did not return a valid document for this issuer.", status=response.status
        )
    cache.set(key, endpoint, DISCOVERY_TTL_SECONDS)
    return endpoint


def _request_token(executor: Executor, secrets: dict, grant: dict) -> dict:
    config = executor.auth_config
    form = dict(grant)
    if _scope(config):
        form["scope"] = _scope(config)
    if config.get("audience"):
        form["audience"] = config["audience"]
    headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
    client_secret = secrets.get("client_secret", "")
    if config.get("token_endpoint_auth_method", "client_secret_basic") == "client_secret_post" or not client_secret:
        form["client_id"] = config["client_id"]
        if client_secret:
            form["client_secret"] = client_secret
    else:
        # RFC 6749 2.3.1: both parts are form-urlencoded before the Basic encoding.
        pair = f"{quote(config['client_id'], safe='')}:{quote(client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    issuer = config["issuer"].rstrip("/")
    response = _send_to_provider(
        f"The token endpoint of {issuer}",
        "POST",
        token_endpoint(executor),
        executor,
        headers=headers,
        content=urlencode(form).encode(),
    )
    body = response.body if isinstance(response.body, dict) else {}
    if response.status >= 500 or response.status == 429:
        raise TokenUnavailable(f"The token endpoint of {issuer} answered {response.status}.")
    if response.status != 200 or not isinstance(body.get("access_token"), str):
        raise TokenError(
            f"The token endpoint of {issuer} refused the request ({response.status}, "
            f"{_error_code(body, sent=[*secrets.values(), *grant.values()])}).",
            status=response.status,
        )
    return body


def _error_code(body: dict, *, sent: list) -> str:
    """The provider's error code, if it is one and echoes nothing we sent; never its description."""
    code = body.get("error")
    if code is None:
        return "no access_token"
    # A provider that puts the client secret, a password or a refresh token in `error` must not
    # get it into fault messages and audit events.
    if not isinstance(code, str) or not ERROR_CODE_RE.fullmatch(code):
        return "unrecognised error code"
    if any(isinstance(value, str) and value and value in code for value in sent):
        return "unrecognised error code"
    return code


def fetch_token(executor: Executor, secrets: dict, refresh_key: str) -> dict:
    if executor.auth_type == AuthType.OIDC_CLIENT_CREDENTIALS:
        return _request_token(executor, secrets, {"grant_type": "client_credentials"})
    # oidc_user: the refresh-token grant first (the latest rotated refresh token if the provider
    # issued one), the password grant when there is none or the provider refuses it.
    refresh_token = _cached_refresh_token(refresh_key) or secrets.get("refresh_token")
    if refresh_token:
        try:
            body = _request_token(executor, secrets, {"grant_type": "refresh_token", "refresh_token": refresh_token})
            _store_refresh_token(refresh_key, body)
            return body
        except TokenError:
            if not secrets.get("password"):
                raise
    grant = {"grant_type": "password", "username": executor.auth_config.get("username", "")}
    grant["password"] = secrets.get("password", "")
    body = _request_token(executor, secrets, grant)
    _store_refresh_token(refresh_key, body)
    return body


def _fetch_through_breaker(executor: Executor, secrets: dict, refresh_key: str) -> dict:
    """fetch_token behind the issuer's own breaker, which every executor using that issuer shares.

    An open circuit refuses at once (IdentityProviderCircuitOpen) without a request, so an outage
    does not make each caller wait out the provider's timeouts. Discovery and token requests that
    fail transiently count as the provider's failures; any answer (a 4xx refusal too) shows it is
    up; policy, TLS and unforeseen errors tell nothing.
    """
    # A probe that never reports back frees its slot once the fetch lock would have expired.
    config = BreakerConfig.from_settings(longest_call=LOCK_TTL_SECONDS)
    breaker = IdentityProviderBreaker(executor.auth_config["issuer"], config=config)
    admission = breaker.admit()
    success: bool | None = None
    try:
        body = fetch_token(executor, secrets, refresh_key)
        success = True
        return body
    except TokenUnavailable:
        success = False
        raise
    except TokenError as exc:
        success = True if exc.status is not None else None
        raise
    finally:
        breaker.record(admission, success=success)


def _cached_refresh_token(key: str) -> str:
    value = cache.get(key)
    if not value:
        return ""
    try:
        return decrypt(value)
    except InvalidToken:
        return ""


def _store_refresh_token(key: str, body: dict) -> None:
    if isinstance(body.get("refresh_token"), str):
        cache.set(key, encrypt(body["refresh_token"]), 30 * 86400)


def _read_cached(key: str) -> str:
    value = cache.get(key)
    if not value:
        return ""
    try:
        # Tokens sit in the shared cache encrypted, so a Redis dump does not hand out partner access.
        return decrypt(value)
    except InvalidToken:
        return ""


def access_token(executor: Executor, secrets: dict, *, stale: str = "", through_breaker: bool = True) -> str:
    """A valid access token, fetched once for all workers and cached until shortly before expiry.

    `stale` is a token the partner just rejected: a cached token equal to it is not reused.
    Concurrent callers in every process share one lock in the cache (cache.add is atomic in
    Redis), so one of them asks the provider and the others wait for the token it stores.
    The one that asks goes through the issuer's breaker unless `through_breaker` is false.
    """
    fingerprint = _fingerprint(executor, secrets)
    key = f"executors:oidc-token:{fingerprint}"
    lock_key = f"{key}:lock"
    refresh_key = f"executors:oidc-refresh:{fingerprint}"
    owner = uuid.uuid4().hex
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        token = _read_cached(key)
        if token and token != stale:
            return token
        if cache.add(lock_key, owner, LOCK_TTL_SECONDS):
            try:
                token = _read_cached(key)
                if token and token != stale:
                    return token
                if through_breaker:
                    body = _fetch_through_breaker(executor, secrets, refresh_key)
                else:
                    body = fetch_token(executor, secrets, refresh_key)
                token = body["access_token"]
                lifetime = _lifetime(body.get("expires_in"))
                if lifetime > 0:
                    cache.set(key, encrypt(token), lifetime)
                return token
            finally:
                if cache.get(lock_key) == owner:
                    cache.delete(lock_key)
        if time.monotonic() >= deadline:
            raise TokenUnavailable("Timed out waiting for another worker's token request.")
        # Another worker is fetching: poll for its token (bounded by the deadline above).
        time.sleep(0.05)


def fresh_access_token(executor: Executor, secrets: dict) -> str:
    """A token fetched now (test connection), through the same lock, cache and rotated refresh token.

    Outside the issuer's breaker, as test connection is outside the partner's: an administrator can
    check that the provider is back while its circuit is still open.
    """
    fingerprint = _fingerprint(executor, secrets)
    stale = _read_cached(f"executors:oidc-token:{fingerprint}") or "-"
    return access_token(executor, secrets, stale=stale, through_breaker=False)


def _lifetime(expires_in) -> int:
    try:
        # At most a day: an absurd value (1e30) would overflow the cache's expiry, and a token is
        # fetched again cheaply.
        seconds = min(int(float(expires_in)), MAX_TOKEN_CACHE_SECONDS)
    except (TypeError, ValueError, OverflowError):
        seconds = 300  # a provider that does not say (or says infinity): assume a short life
    margin = settings.ELSA_EXECUTOR_TOKEN_REFRESH_MARGIN_SECONDS
    return seconds - margin if seconds > 2 * margin else seconds // 2
