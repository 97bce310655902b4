"""Writes of the executors app: executor configuration, outbound calls and connection tests (all audited)."""

import json
import logging
import re
import time
from dataclasses import dataclass, field
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from django.conf import settings
from django.db import IntegrityError, transaction

from audit.actors import Actor
from audit.services import audit_record
from elsa_site.errors import Conflict, InvalidInput, NotFound
from workflows.encryption import encrypt
from workflows.executors.auth import (
    OIDC_TYPES,
    CredentialsRefused,
    CredentialsUnavailable,
    apply_auth,
    oidc_access_token,
)
from workflows.executors.breaker import CircuitBreaker, CircuitOpenError
from workflows.executors.client import PermanentError, TlsMaterial, TransientError, send
from workflows.executors.credentials import (
    CredentialsUnreadable,
    encrypt_secrets,
    executor_client_key,
    executor_secrets,
    is_masked,
    split_config,
)
from workflows.executors.models import AuthType, Executor
from workflows.executors.retry import is_transient_status, parse_retry_after
from workflows.executors.ssrf import OutboundRefused, parse_base_url, require_secure_scheme, resolve_target

logger = logging.getLogger("elsa.executors")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
CONFIG_FIELDS = (
    "name",
    "description",
    "base_url",
    "endpoints",
    "auth_type",
    "auth_config",
    "auth_secrets_encrypted",
    "tls_client_certificate",
    "tls_client_key_encrypted",
    "tls_ca_bundle",
    "enabled",
    "internal",
)


# --- Configuration -----------------------------------------------------------------------------


def _clean_endpoints(endpoints) -> list[dict]:
    if not isinstance(endpoints, list):
        raise InvalidInput("endpoints must be a list.")
    cleaned, names = [], set()
    for index, endpoint in enumerate(endpoints):
        where = f"endpoints[{index}]"
        if not isinstance(endpoint, dict):
            raise InvalidInput(f"{where} must be an object.")
        unknown = set(endpoint) - {"name", "path", "method", "timeout"}
        if unknown:
            raise InvalidInput(f"{where} has unknown fields.", details={where: sorted(unknown)})
        name, path = endpoint.get("name"), endpoint.get("path", "")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise InvalidInput(f"{where}.name must be 1-100 letters, digits, '_', '.' or '-'.")
        if name in names:
            raise InvalidInput(f"{where}.name is used twice.")
        names.add(name)
        if not isinstance(path, str) or not path.startswith("/") or "://" in path or "?" in path or "#" in path:
            raise InvalidInput(f"{where}.path must be a path starting with '/' (no query, no host).")
        if any(segment in (".", "..") for segment in path.split("/")):
            raise InvalidInput(f"{where}.path may not contain '.' or '..' segments.")
        method = str(endpoint.get("method", "GET")).upper()
        if method not in METHODS:
            raise InvalidInput(f"{where}.method must be one of {', '.join(METHODS)}.")
        timeout = endpoint.get("timeout", 30)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 1 <= timeout <= 300:
            raise InvalidInput(f"{where}.timeout must be a number of seconds from 1 to 300.")
        cleaned.append({"name": name, "path": path, "method": method, "timeout": timeout})
    return cleaned


def _clean_tls(tls, current: Executor | None) -> dict:
    if tls is None:
        tls = {}
    if not isinstance(tls, dict) or set(tls) - {"client_certificate", "client_key", "ca_bundle"}:
        raise InvalidInput("tls takes client_certificate, client_key and ca_bundle.")
    certificate = tls.get("client_certificate", current.tls_client_certificate if current else "") or ""
    ca_bundle = tls.get("ca_bundle", current.tls_ca_bundle if current else "") or ""
    key = tls.get("client_key")
    key_encrypted = current.tls_client_key_encrypted if current else ""
    if key is not None and not is_masked(key):
        if key and not isinstance(key, str):
            raise InvalidInput("tls.client_key must be a PEM string.")
        if key:
            try:
                load_pem_private_key(key.encode(), password=None)
            except (ValueError, TypeError) as exc:
                # The parser's message could quote the key: say only that it is not valid.
                raise InvalidInput("tls.client_key is not an unencrypted PEM private key.") from exc
        key_encrypted = encrypt(key) if key else ""
    try:
        if certificate:
            x509.load_pem_x509_certificate(certificate.encode())
        if ca_bundle:
            x509.load_pem_x509_certificates(ca_bundle.encode())
    except ValueError as exc:
        raise InvalidInput("tls certificates must be PEM encoded X.509 certificates.") from exc
    if bool(certificate) != bool(key_encrypted):
        raise InvalidInput("tls.client_certificate and tls.client_key go together.")
    return {
        "tls_client_certificate": certificate,
        "tls_client_key_encrypted": key_encrypted,
        "tls_ca_bundle": ca_bundle,
    }


def clean_executor_data(data: dict, current: Executor | None) -> dict:
    """Validate API-shaped `data` (partial when `current` is given) into model field values."""
    allowed = {"name", "description", "base_url", "endpoints", "authentication", "tls", "enabled"}
    unknown = set(data) - allowed
    if unknown:
        raise InvalidInput("Unknown executor fields.", details={"fields": sorted(unknown)})
    values: dict = {}
    if "name" in data or current is None:
        name = data.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise InvalidInput("name must be 1-100 letters, digits, '_', '.' or '-', starting with a letter or digit.")
        values["name"] = name
    if "description" in data:
        values["description"] = str(data["description"] or "")[:2000]
    if "base_url" in data or current is None:
        base_url = data.get("base_url")
        if not isinstance(base_url, str) or len(base_url) > 2048:
            raise InvalidInput("base_url must be a URL.")
        parse_base_url(base_url)
        require_secure_scheme(base_url)
        values["base_url"] = base_url.rstrip("/")
    if "endpoints" in data or current is None:
        values["endpoints"] = _clean_endpoints(data.get("endpoints", []))
    if "authentication" in data or current is None:
        authentication = data.get("authentication") or {"type": AuthType.NONE, "config": {}}
        if not isinstance(authentication, dict):
            raise InvalidInput("authentication must be an object {type, config}.")
        auth_type = authentication.get("type", AuthType.NONE)
        same_type = current is not None and current.auth_type == auth_type
        current_secrets = _readable_secrets(current) if current is not None and same_type else None
        public, secrets = split_config(auth_type, authentication.get("config") or {}, current_secrets=current_secrets)
        if public.get("issuer"):
            require_secure_scheme(public["issuer"])
        values.update(auth_type=auth_type, auth_config=public, auth_secrets_encrypted=encrypt_secrets(secrets))
    if current is not None:
        _refuse_kept_secrets_for_a_new_destination(data, values, current)
    if "tls" in data or current is None:
        values.update(_clean_tls(data.get("tls"), current))
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            raise InvalidInput("enabled must be true or false.")
        values["enabled"] = data["enabled"]
    return values


def _refuse_kept_secrets_for_a_new_destination(data: dict, values: dict, current: Executor) -> None:
    """400 when a stored secret would go, unseen by the caller, to another origin or identity provider.

    Write-only credentials: someone who never saw a secret must not be able to send it elsewhere by
    changing only where it goes (base_url's origin, the OIDC issuer whose token endpoint receives
    the client secret). Such a change has to come with the secrets entered again.
    """
    if values.get("auth_type", current.auth_type) != current.auth_type:
        return  # a new type keeps no stored secret
    new_origin = "base_url" in values and parse_base_url(values["base_url"]) != parse_base_url(current.base_url)
    new_issuer = "auth_config" in values and values["auth_config"].get("issuer") != current.auth_config.get("issuer")
    if not (new_origin or new_issuer):
        return
    config = (data.get("authentication") or {}).get("config") or {}
    entered = {name for name, value in config.items() if isinstance(value, str) and value and not is_masked(value)}
    kept = sorted(name for name in _readable_secrets(current) if name not in entered)
    if kept:
        where = "base_url points to another origin" if new_origin else "the issuer changed"
        raise InvalidInput(
            f"{where}: enter the stored credentials again ({', '.join(kept)}); they are not sent to a new destination.",
            details={"authentication.config": kept},
        )


def _readable_secrets(executor: Executor) -> dict:
    # Unreadable stored secrets (a removed key) count as absent: the update must supply them again.
    try:
        return executor_secrets(executor)
    except CredentialsUnreadable:
        return {}


def _audit_config(executor: Executor, *, action: str, fields: list[str], actor: Actor) -> None:
    # Field names only: a changed secret shows up as "auth_secrets_encrypted", never its value.
    audit_record(
        event_type="config.changed",
        action=action,
        resource=("executor", str(executor.pk)),
        actor=actor,
        context={"model": "executors.executor", "fields": sorted(fields), "via": "api"},
    )


@transaction.atomic
def executor_create(*, data: dict, actor: Actor, internal: bool = False) -> Executor:
    """Create an executor from API-shaped data; `internal` (SSRF exemption) is for administrators only."""
    values = clean_executor_data(data, None)
    executor = Executor(**values, internal=internal)
    try:
        with transaction.atomic():
            executor.save()
    except IntegrityError as exc:
        raise Conflict("An executor with this name already exists.") from exc
    _audit_config(executor, action="created", fields=[f for f in CONFIG_FIELDS if f in values or f == "internal"],
                  actor=actor)  # fmt: skip
    return executor


@transaction.atomic
def executor_update(*, executor: Executor, data: dict, actor: Actor, internal: bool | None = None) -> Executor:
    """Apply a partial update; secrets left out or sent back masked keep their stored values."""
    executor = Executor.objects.select_for_update().get(pk=executor.pk)
    values = clean_executor_data(data, executor)
    if internal is not None:
        values["internal"] = internal
    changed = [name for name, value in values.items() if getattr(executor, name) != value]
    if "auth_secrets_encrypted" in changed and _readable_secrets(executor) == _secrets_of(values):
        changed.remove("auth_secrets_encrypted")  # re-encrypted, same plaintext
    for name, value in values.items():
        setattr(executor, name, value)
    try:
        with transaction.atomic():
            executor.save()
    except IntegrityError as exc:
        raise Conflict("An executor with this name already exists.") from exc
    if changed:
        _audit_config(executor, action="updated", fields=changed, actor=actor)
    return executor


def _secrets_of(values: dict) -> dict:
    probe = Executor(auth_secrets_encrypted=values.get("auth_secrets_encrypted", ""))
    return executor_secrets(probe)


@transaction.atomic
def executor_delete(*, executor: Executor, actor: Actor) -> None:
    _audit_config(executor, action="deleted", fields=[], actor=actor)
    executor.delete()


# --- Outbound calls ------------------------------------------------------------------------------


@dataclass
class CallResult:
    """What one attempt produced; `kind` is success, client_error, transient (429, 5xx, no response) or credentials.

    `credentials`: the executor's credentials could not be fetched (its identity provider failed);
    as transient as a partner failure, but the partner's breaker did not count it.
    """

    kind: str
    status: int | None = None
    headers: dict = field(default_factory=dict)
    body: object = None
    body_too_large: bool = False
    error: str = ""
    retry_after: float | None = None
    duration_ms: int = 0
    breaker_state: str = ""

    @property
    def transient(self) -> bool:
        return self.kind in ("transient", "credentials") or (
            self.status is not None and is_transient_status(self.status)
        )


def _tls_material(executor: Executor) -> TlsMaterial:
    return TlsMaterial(
        client_certificate=executor.tls_client_certificate,
        client_key=executor_client_key(executor),
        ca_bundle=executor.tls_ca_bundle,
        cache_key=f"{executor.pk}:{executor.updated_at.isoformat() if executor.updated_at else ''}",
    )


def _path_param(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    if text in ("", ".", ".."):
        # An empty or dot segment would change which resource the path names.
        raise InvalidInput("Path parameters may not be empty, '.' or '..'.")
    return quote(text, safe="")


def build_url(executor: Executor, endpoint: dict, path_params: dict | None) -> str:
    path_params = path_params or {}
    path = endpoint["path"]
    for name in re.findall(r"\{([A-Za-z0-9_]+)\}", path):
        if name not in path_params:
            raise InvalidInput(f"Missing path parameter '{name}'.")
        path = path.replace("{" + name + "}", _path_param(path_params[name]))
    return executor.base_url + path


def _stringify(values: dict | None) -> dict[str, str]:
    out = {}
    for key, value in (values or {}).items():
        if value is None:
            continue
        out[str(key)] = value if isinstance(value, str) else json.dumps(value)
    return out


def _audit_call(
    executor, *, endpoint, method, status, duration_ms, attempt, breaker_state, ok, error, actor, context, message=""
):
    # Never credentials or bodies: the call's shape and result only. `message` is set for a failed
    # credential fetch only, and is one of our own messages (see auth._credential_fetch_failed).
    metadata = {
        "executor": executor.name,
        "endpoint": endpoint,
        "method": method,
        "status": status,
        "duration_ms": duration_ms,
        "attempt": attempt,
        "breaker_state": breaker_state,
        "error": error,
    }
    if message:
        metadata["message"] = message
    with transaction.atomic():
        audit_record(
            event_type="executor.call",
            action="call",
            result="success" if ok else "failure",
            resource=("executor", str(executor.pk)),
            actor=actor,
            context=context or {},
            metadata=metadata,
        )
    logger.info(
        "executor call",
        extra={
            "executor": executor.name,
            "endpoint": endpoint,
            "method": method,
            "status": status,
            "duration_ms": duration_ms,
            "attempt": attempt,
            "breaker_state": breaker_state,
            "error": error,
        },
    )


# Not @transaction.atomic: this service opens no transaction of its own around the call; each audit
# event gets its own atomic block (a savepoint within the engine's step transaction, which holds the
# instance's row lock so the step cannot go stale and repeat the call; see HttpRequest).
def executor_call(
    *,
    executor: Executor,
    endpoint: str,
    path_params: dict | None = None,
    query: dict | None = None,
    headers: dict | None = None,
    body=None,
    attempt: int = 0,
    actor: Actor,
    context: dict | None = None,
    breaker: CircuitBreaker | None = None,
) -> CallResult:
    """Make one attempt of a call through the executor's breaker; every attempt is audited.

    Returns the response (or a transient failure) as a CallResult. Raises CircuitOpenError when
    the circuit refuses the call, OutboundRefused when policy does (SSRF, https), InvalidInput or
    NotFound for a bad call, PermanentError when retrying cannot help (TLS, refused credentials).

    A failed credential fetch (the OIDC identity provider down or refusing) counts as neither a
    success nor a failure of the partner's breaker: the partner was not asked, or answered.
    """
    if not executor.enabled:
        raise NotFound(f"Executor '{executor.name}' is disabled.")
    spec = executor.endpoint(endpoint)
    if spec is None:
        raise NotFound(f"Executor '{executor.name}' has no endpoint '{endpoint}'.")
    method = spec["method"]
    url = build_url(executor, spec, path_params)
    audit = {"endpoint": endpoint, "method": method, "attempt": attempt, "actor": actor, "context": context}
    breaker = breaker or CircuitBreaker(executor)
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    request_headers = _stringify(headers)
    params = _stringify(query)
    content = None
    if body is not None and method not in ("GET", "HEAD"):
        try:
            content = json.dumps(body).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidInput("The request body is not a JSON value.") from exc
        request_headers.setdefault("Content-Type", "application/json")
    request_headers.setdefault("Accept", "application/json")

    try:
        # Policy first: a refused target must not take a half-open probe slot.
        require_secure_scheme(url)
        _, host, port = parse_base_url(url)
        resolve_target(host, port, internal=executor.internal)
        admission = breaker.admit()
    except (OutboundRefused, CircuitOpenError) as exc:
        state = breaker.state() if isinstance(exc, CircuitOpenError) else ""
        kind = "circuit_open" if isinstance(exc, CircuitOpenError) else "refused"
        _audit_call(executor, status=None, duration_ms=elapsed(), breaker_state=state, ok=False, error=kind, **audit)
        raise

    max_bytes = settings.ELSA_EXECUTOR_RESPONSE_MAX_BYTES
    try:
        secrets = executor_secrets(executor)
        auth_params: dict[str, str] = {}
        token = apply_auth(executor, secrets, request_headers, auth_params)
        params.update(auth_params)  # after the workflow's: a workflow cannot override the credentials
        exchange = {"internal": executor.internal, "content": content, "timeout": float(spec["timeout"])}
        exchange.update(tls=_tls_material(executor), max_bytes=max_bytes, auth_params=auth_params)
        response = send(method, url, headers=request_headers, params=params, **exchange)
        if response.status == 401 and executor.auth_type in OIDC_TYPES:
            # The partner rejected a cached token (revoked early): fetch a fresh one once and resend.
            apply_auth(executor, secrets, request_headers, params, stale_token=token)
            response = send(method, url, headers=request_headers, params=params, **exchange)
    except (CredentialsUnavailable, CredentialsRefused) as exc:
        # The identity provider failed, not the partner: hand back a half-open probe slot, count nothing.
        state = breaker.record(admission, success=None)
        _audit_call(executor, status=None, duration_ms=elapsed(), breaker_state=state, ok=False,
                    error=exc.audit_error, message=str(exc), **audit)  # fmt: skip
        if isinstance(exc, CredentialsRefused):
            raise
        return CallResult(kind="credentials", error=str(exc), duration_ms=elapsed(), breaker_state=state)
    except TransientError as exc:
        state = breaker.record(admission, success=False)
        _audit_call(executor, status=None, duration_ms=elapsed(), breaker_state=state, ok=False, error="transient",
                    **audit)  # fmt: skip
        return CallResult(kind="transient", error=str(exc), duration_ms=elapsed(), breaker_state=state)
    except (PermanentError, OutboundRefused) as exc:
        # A configuration or policy problem says nothing about the service's health.
        state = breaker.record(admission, success=None)
        error = "refused" if isinstance(exc, OutboundRefused) else "permanent"
        _audit_call(executor, status=None, duration_ms=elapsed(), breaker_state=state, ok=False, error=error, **audit)
        raise
    except BaseException:
        # Anything unforeseen hands the probe slot back rather than holding it until it goes stale.
        breaker.record(admission, success=None)
        raise
    transient = is_transient_status(response.status)
    state = breaker.record(admission, success=not transient)
    if 200 <= response.status < 300:
        kind = "success"
    elif transient:
        kind = "transient"
    else:
        kind = "client_error"
    duration = elapsed()
    _audit_call(executor, status=response.status, duration_ms=duration, breaker_state=state, ok=kind == "success",
                error="", **audit)  # fmt: skip
    return CallResult(
        kind=kind,
        status=response.status,
        headers=response.headers,
        body=response.body,
        body_too_large=response.body_too_large,
        error=f"The service answered {response.status}." if kind != "success" else "",
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        duration_ms=duration,
        breaker_state=state,
    )


def executor_test_connection(*, executor: Executor, actor: Actor) -> dict:
    """Check that the executor's host is allowed and reachable and that its credentials are accepted.

    Sends GET to the base URL with the credentials (obtaining an OIDC token first), outside the
    circuit breaker so an administrator can test while it is open. Audited like a call.
    """
    started = time.monotonic()
    result = {"ok": False, "status": None, "duration_ms": 0, "error": ""}
    try:
        secrets = executor_secrets(executor)
        headers: dict[str, str] = {"Accept": "application/json"}
        params: dict[str, str] = {}
        if executor.auth_type in OIDC_TYPES:
            # Always a fresh token, so the test proves today's client credentials, not a cached token.
            headers["Authorization"] = f"Bearer {oidc_access_token(executor, secrets, fresh=True)}"
        else:
            apply_auth(executor, secrets, headers, params)
        response = send(
            "GET", executor.base_url + "/", internal=executor.internal, headers=headers, params=params,
            auth_params=params, timeout=10.0, tls=_tls_material(executor), max_bytes=64 * 1024,
        )  # fmt: skip
        result["status"] = response.status
        if response.status in (401, 403):
            result["error"] = f"The service refused the credentials ({response.status})."
        elif response.status >= 500:
            result["error"] = f"The service answered {response.status}."
        else:
            result["ok"] = True
    except (OutboundRefused, TransientError, PermanentError) as exc:
        result["error"] = str(exc)
    result["duration_ms"] = int((time.monotonic() - started) * 1000)
    with transaction.atomic():
        audit_record(
            event_type="executor.call",
            action="test_connection",
            result="success" if result["ok"] else "failure",
            resource=("executor", str(executor.pk)),
            actor=actor,
            metadata={
                "executor": executor.name,
                "endpoint": "",
                "method": "GET",
                "status": result["status"],
                "duration_ms": result["duration_ms"],
                "attempt": 0,
                "breaker_state": CircuitBreaker(executor).state(),
            },
        )
    return result
