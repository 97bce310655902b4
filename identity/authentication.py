"""DRF authentication classes: our JWTs, external OIDC access tokens, and API keys."""

import jwt
from django.conf import settings
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication

from audit.actors import client_ip
from identity import apikeys, config_file, oidc, ratelimits, tokens
from identity.principals import Principal

CHALLENGE = 'Bearer realm="elsa", ApiKey realm="elsa"'


def _bearer(request) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    value = value.strip()
    if not value:
        raise exceptions.AuthenticationFailed("Invalid bearer token.")
    return value


def _unverified_issuer(token: str) -> str | None:
    # Only to route the token to the right verifier; nothing is trusted before verification.
    try:
        return jwt.decode(token, options={"verify_signature": False}).get("iss")
    except jwt.PyJWTError as exc:
        raise exceptions.AuthenticationFailed("Invalid bearer token.") from exc


class JwtAuthentication(BaseAuthentication):
    """Accepts our own access tokens (issuer ELSA_JWT_ISSUER) and builds the principal from claims."""

    def authenticate(self, request):
        token = _bearer(request)
        if token is None:
            return None
        principal = tokens.cached_access_token_principal(token)
        if principal is not None:
            return principal, token
        if _unverified_issuer(token) != settings.ELSA_JWT_ISSUER:
            return None
        principal = tokens.access_token_principal(token)
        if principal is None:
            raise exceptions.AuthenticationFailed("Invalid or expired access token.")
        return principal, token

    def authenticate_header(self, request) -> str:
        return CHALLENGE


class OidcAuthentication(BaseAuthentication):
    """Accepts RS256/ES256 access tokens of the external issuers in ELSA_OIDC_ISSUERS."""

    def authenticate(self, request):
        token = _bearer(request)
        if token is None:
            return None
        issuer = _unverified_issuer(token)
        if issuer == settings.ELSA_JWT_ISSUER:
            return None
        principal = oidc.oidc_principal(token, issuer)
        if principal is None:
            raise exceptions.AuthenticationFailed("Invalid or expired access token.")
        return principal, token

    def authenticate_header(self, request) -> str:
        return CHALLENGE


class ApiKeyAuthentication(BaseAuthentication):
    """Accepts `Authorization: ApiKey <key>` or `X-API-Key: <key>` of an enabled application."""

    def get_key(self, request) -> str | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "apikey":
            return value.strip()
        return request.META.get("HTTP_X_API_KEY", "").strip() or None

    def find_application(self, key: str, *, cached_only: bool = False) -> Principal | None:
        """The key's application; `cached_only`: only from memory (keys this process verified, the file's)."""
        return apikeys.api_key_verify(key, cached_only=cached_only) or config_file.config_api_key_principal(key)

    def authenticate(self, request):
        key = self.get_key(request)
        if key is None:
            return None
        # A key this process has verified, or one of the identity file, costs no round trip and is
        # never limited. Any other key is first checked against the client IP's failed attempts, so
        # a flood of made-up keys costs one cache lookup each, not a query and an audit event.
        principal = self.find_application(key, cached_only=True)
        if principal is None:
            self.refuse_if_blocked(request, key)
            principal = apikeys.api_key_verify(key)
        if principal is None:
            self.record_failure(request, key)
            raise exceptions.AuthenticationFailed("Invalid API key.")
        return principal, None

    def refuse_if_blocked(self, request, key: str) -> None:
        """429 while the client IP is over ELSA_API_KEY_FAILURE_RATE; audited once per block."""
        block = ratelimits.api_key_block(request)
        if block is None:
            return
        if block.first_refusal:
            self.audit_failure(request, key, reason="rate_limited")
        raise exceptions.Throttled(
            wait=block.retry_after, detail="Too many failed API key attempts from this address; try again later."
        )

    def record_failure(self, request, key: str) -> None:
        ratelimits.api_key_failure_count(request)
        self.audit_failure(request, key, reason="invalid_api_key")

    def audit_failure(self, request, key: str, *, reason: str) -> None:
        from identity.services import api_key_failure_record

        parsed = apikeys.api_key_parse(key)
        # Only the public key id (if the key is well-formed) is recorded, never the key.
        api_key_failure_record(ip=client_ip(request), key_id=parsed[0] if parsed else "", reason=reason)

    def authenticate_header(self, request) -> str:
        return CHALLENGE


class PrincipalSessionAuthentication(SessionAuthentication):
    """Admin session users on the API (CSRF enforced); their roles give the permissions."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        user, auth = result
        if not user.is_active:
            return None
        return user, auth
