"""Apply an executor's authentication to an outgoing request (headers or query parameters)."""

import base64

from workflows.executors import oidc
from workflows.executors.models import AuthType, Executor

OIDC_TYPES = (AuthType.OIDC_CLIENT_CREDENTIALS, AuthType.OIDC_USER)


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
        token = oidc.access_token(executor, secrets, stale=stale_token)
        _set_header(headers, "Authorization", f"Bearer {token}")
        return token
    return ""


def _set_header(headers: dict, name: str, value: str) -> None:
    # Case-insensitive replace: a workflow-supplied "authorization" must not survive next to ours.
    for existing in [k for k in headers if k.lower() == name.lower()]:
        del headers[existing]
    headers[name] = value
