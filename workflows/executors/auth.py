"""Apply an executor's authentication to an outgoing request (headers or query parameters)."""

import base64

from elsa_site.errors import DomainError
from workflows.executors import oidc
from workflows.executors.breaker import IdentityProviderCircuitOpen
from workflows.executors.client import PermanentError, TransientError
from workflows.executors.models import AuthType, Executor

OIDC_TYPES = (AuthType.OIDC_CLIENT_CREDENTIALS, AuthType.OIDC_USER)


def _credential_fetch_failed(executor: Executor, detail: str) -> str:
    # Built from our own messages (host, issuer, status, the provider's error code), never from what
    # was sent or received: no client secret, password, refresh or access token can end up here.
    return f"Credential fetch for executor '{executor.name}' failed: {detail}"


class CredentialsUnavailable(TransientError):
    """The executor's credentials could not be fetched now (identity provider down, 5xx, 429, timeout): retry later."""

    audit_error = "credentials_unavailable"

    def __init__(self, executor: Executor, detail: str):
        super().__init__(_credential_fetch_failed(executor, detail))


class CredentialsRefused(PermanentError):
    """The executor's credentials could not be fetched and a retry cannot help (refused client, TLS, policy)."""

    audit_error = "credentials_refused"

    def __init__(self, executor: Executor, detail: str):
        super().__init__(_credential_fetch_failed(executor, detail))


class CredentialsCircuitOpen(CredentialsRefused):
    """The identity provider's circuit is open: no token request was made; fail at once, as for a partner's."""

    audit_error = "credentials_circuit_open"


def oidc_access_token(executor: Executor, secrets: dict, *, stale_token: str = "", fresh: bool = False) -> str:
    """The executor's OIDC access token; a failure to get one is a CredentialsUnavailable or CredentialsRefused.

    Those say that the credential fetch failed, so neither the workflow nor the partner's breaker
    takes an identity provider's failure for the partner's.
    """
    try:
        if fresh:
            return oidc.fresh_access_token(executor, secrets)
        return oidc.access_token(executor, secrets, stale=stale_token)
    except IdentityProviderCircuitOpen as exc:
        raise CredentialsCircuitOpen(executor, str(exc)) from exc
    except TransientError as exc:
        raise CredentialsUnavailable(executor, str(exc)) from exc
    except PermanentError as exc:
        raise CredentialsRefused(executor, str(exc)) from exc
    except DomainError as exc:
        # Policy (SSRF, plain http in production) or a malformed URL on the way to the provider.
        raise CredentialsRefused(executor, exc.message) from exc


def apply_auth(executor: Executor, secrets: dict, headers: dict, params: dict, *, stale_token: str = "") -> str:
    """Add the credentials to `headers` / `params` in place; returns the OIDC access token used, if any.

    Called after the workflow's own headers are in place, so a workflow cannot override or
    read the credentials (they never enter expressions or outputs).
    """
    config = executor.auth_config
    kind = executor.auth_type
    if kind == AuthType.API_KEY:
        value = config.get("prefix", "") + secrets["key"]
        if config.get("query_param"):
            params[config["query_param"]] = value
        else:
            _set_header(headers, config.get("header") or "X-API-Key", value)
    elif kind == AuthType.BEARER:
        _set_header(headers, "Authorization", f"Bearer {secrets['token']}")
    elif kind == AuthType.BASIC:
        pair = f"{config['username']}:{secrets['password']}".encode()
        _set_header(headers, "Authorization", "Basic " + base64.b64encode(pair).decode())
    elif kind in OIDC_TYPES:
        token = oidc_access_token(executor, secrets, stale_token=stale_token)
        _set_header(headers, "Authorization", f"Bearer {token}")
        return token
    return ""


def _set_header(headers: dict, name: str, value: str) -> None:
    # Case-insensitive replace: a workflow-supplied "authorization" must not survive next to ours.
    for existing in [k for k in headers if k.lower() == name.lower()]:
        del headers[existing]
    headers[name] = value
