"""One outbound HTTP exchange: resolved and checked IP pinned, per-executor TLS, bounded body, same-origin redirects."""

import json
import logging
import os
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from urllib.parse import urljoin

import certifi
import httpx

from workflows.executors.ssrf import OutboundRefused, parse_base_url, require_secure_scheme, resolve_target

# httpx logs every request URL at INFO, query string included, where an api_key query parameter lives.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

MAX_REDIRECTS = 3
# Hop-by-hop and routing headers a workflow may not set: Host is pinned by us, the rest belong to the transport.
FORBIDDEN_REQUEST_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer", "proxy-authorization"}
)
# Response headers never copied into workflow outputs: session cookies are credentials.
DROPPED_RESPONSE_HEADERS = frozenset({"set-cookie", "set-cookie2"})


class TransientError(Exception):
    """The exchange failed in a way worth retrying (connection refused or reset, timeout)."""


class PermanentError(Exception):
    """The exchange failed in a way a retry cannot fix (TLS verification, bad configuration)."""


@dataclass
class TlsMaterial:
    """What an executor brings to TLS: a client certificate and key (mTLS), and the CAs it trusts."""

    client_certificate: str = ""
    client_key: str = ""
    ca_bundle: str = ""
    cache_key: str = ""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: object = None
    body_too_large: bool = False
    raw: bytes = field(default=b"", repr=False)


_contexts: dict[str, ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def ssl_context(tls: TlsMaterial | None) -> ssl.SSLContext:
    """A verifying client context: the executor's CA bundle (or the public CAs) and its client certificate."""
    key = tls.cache_key if tls and tls.cache_key else ""
    if key and key in _contexts:
        return _contexts[key]
    if tls and tls.ca_bundle:
        # Only the executor's own CAs: a partner with a private CA should not also accept any public cert.
        context = ssl.create_default_context(cadata=tls.ca_bundle)
    else:
        context = ssl.create_default_context(cafile=certifi.where())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls and tls.client_certificate and tls.client_key:
        # The ssl module loads keys only from files: a private 0700 directory holds them for the
        # duration of this call and is removed at once, so the plaintext key never outlives it.
        with tempfile.TemporaryDirectory(prefix="elsa-mtls-") as directory:
            cert_path = os.path.join(directory, "cert.pem")
            key_path = os.path.join(directory, "key.pem")
            for path, text in ((cert_path, tls.client_certificate), (key_path, tls.client_key)):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(text)
            try:
                context.load_cert_chain(cert_path, key_path)
            except ssl.SSLError as exc:
                raise PermanentError("The executor's client certificate or key is not valid.") from exc
    if key:
        with _contexts_lock:
            if len(_contexts) > 256:
                _contexts.clear()
            _contexts[key] = context
    return context


def _host_header(host: str, scheme: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == (443 if scheme == "https" else 80) else f"{shown}:{port}"


def _is_tls_failure(exc: BaseException | None) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ssl.SSLError | ssl.CertificateError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _read_limited(response: httpx.Response, max_bytes: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            return b"", True
        chunks.append(chunk)
    return b"".join(chunks), False


def decode_body(raw: bytes, content_type: str):
    """JSON when the partner says so (falling back to text when it lies), otherwise text."""
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    if "json" in content_type.lower():
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def send(
    method: str,
    url: str,
    *,
    internal: bool,
    headers: dict[str, str] | None = None,
    params: dict | None = None,
    content: bytes | None = None,
    timeout: float = 30.0,
    tls: TlsMaterial | None = None,
    max_bytes: int = 1024 * 1024,
    auth_params: dict | None = None,
) -> Response:
    """Send one request and follow at most MAX_REDIRECTS redirects on the same origin.

    `params` go with the first request only (a redirect's Location brings its own query);
    `auth_params`, the authentication's query parameters (an api_key), go with every request.
    Raises OutboundRefused (policy), TransientError (worth a retry) or PermanentError.
    """
    origin = parse_base_url(url)
    for _ in range(MAX_REDIRECTS + 1):
        response = _send_once(
            method, url, internal=internal, headers=headers, params=params, content=content,
            timeout=timeout, tls=tls, max_bytes=max_bytes,
        )  # fmt: skip
        location = response.headers.get("location")
        if response.status not in (301, 302, 303, 307, 308) or not location:
            return response
        target = urljoin(url, location)
        try:
            target_origin = parse_base_url(target.split("?", 1)[0])
        except Exception as exc:  # noqa: BLE001 - any malformed Location is a refused redirect
            raise OutboundRefused("The service redirected to an invalid URL; not followed.") from exc
        if target_origin != origin:
            # Following would send credentials to, and read from, a host nobody configured.
            raise OutboundRefused("The service redirected to another host; redirects across hosts are not followed.")
        # Same origin only (checked above), so the credentials may follow, as headers do; merged into
        # the Location's query (httpx's params would replace it).
        url, params = str(httpx.URL(target).copy_merge_params(auth_params)) if auth_params else target, None
        if response.status in (301, 302, 303) and method.upper() != "HEAD":
            method, content = "GET", None
    raise OutboundRefused("Too many redirects.")


def _send_once(method, url, *, internal, headers, params, content, timeout, tls, max_bytes) -> Response:
    origin_url = url.split("?", 1)[0]  # a redirect's Location may carry a query
    require_secure_scheme(origin_url)
    scheme, host, port = parse_base_url(origin_url)
    ip = resolve_target(host, port, internal=internal)
    # Connect to the address we just checked (no second lookup that DNS rebinding could redirect),
    # while the Host header and TLS SNI/verification still use the configured host name.
    pinned = httpx.URL(url).copy_with(host=ip)
    request_headers = {k: v for k, v in (headers or {}).items() if k.lower() not in FORBIDDEN_REQUEST_HEADERS}
    request_headers["Host"] = _host_header(host, scheme, port)
    extensions = {"sni_hostname": host} if scheme == "https" else {}
    verify = ssl_context(tls) if scheme == "https" else False
    try:
        # trust_env=False: an HTTP(S)_PROXY variable would route around the pinned, checked address.
        with httpx.Client(verify=verify, follow_redirects=False, trust_env=False, timeout=timeout) as client:
            request = client.build_request(
                method, pinned, headers=request_headers, params=params, content=content, extensions=extensions
            )
            response = client.send(request, stream=True)
            try:
                raw, too_large = _read_limited(response, max_bytes)
            finally:
                response.close()
            status = response.status_code
            response_headers = {
                k.lower(): v for k, v in response.headers.items() if k.lower() not in DROPPED_RESPONSE_HEADERS
            }
    except httpx.TimeoutException as exc:
        raise TransientError(f"The request to {host} timed out.") from exc
    except httpx.LocalProtocolError as exc:
        # Our own request is malformed (h11 refused it before sending, e.g. a control character in a
        # header value): nothing reached the partner, and no retry can fix it.
        raise PermanentError(f"The request to {host} could not be sent: it is not valid HTTP.") from exc
    except httpx.TransportError as exc:
        if _is_tls_failure(exc):
            raise PermanentError(f"The TLS handshake with {host} failed.") from exc
        raise TransientError(f"The connection to {host} failed.") from exc
    body = None if too_large else decode_body(raw, response_headers.get("content-type", ""))
    return Response(status=status, headers=response_headers, body=body, body_too_large=too_large, raw=raw)
