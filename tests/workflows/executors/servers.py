"""Real HTTP(S) servers on 127.0.0.1 for executor tests: a partner API, an OIDC issuer, certificates."""

import base64
import datetime as dt
import ipaddress
import json
import ssl
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes


@dataclass
class ServerState:
    """What a test server saw and how it should answer next (set by the test)."""

    requests: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # respond(recorded) -> (status, headers, body bytes or JSON value)
    respond: object = None
    delay: float = 0.0
    url: str = ""

    def count(self, path: str | None = None) -> int:
        with self.lock:
            return sum(1 for r in self.requests if path is None or r.path == path)


def _handler(state: ServerState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet test output
            pass

        def _handle(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            recorded = Recorded(
                self.command, parts.path, parse_qs(parts.query), {k.lower(): v for k, v in self.headers.items()}, body
            )
            with state.lock:
                state.requests.append(recorded)
            if state.delay:
                time.sleep(state.delay)  # the server under test is slow on purpose
            status, headers, payload = state.respond(recorded)
            if not isinstance(payload, bytes):
                payload = json.dumps(payload).encode()
                headers = {"Content-Type": "application/json", **headers}
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    return Handler


@contextmanager
def serve(respond, *, tls: ssl.SSLContext | None = None, delay: float = 0.0):
    """Run a threaded HTTP(S) server on 127.0.0.1 for the duration of the block."""
    state = ServerState(respond=respond, delay=delay)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls else "http"
    state.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def ok(recorded):
    return 200, {}, {"ok": True, "path": recorded.path}


def basic_credentials(recorded) -> tuple[str, str] | None:
    value = recorded.headers.get("authorization", "")
    if not value.startswith("Basic "):
        return None
    user, _, password = base64.b64decode(value[6:]).decode().partition(":")
    return user, password


class OidcIssuer:
    """Discovery and token endpoints that check the client and count token requests."""

    def __init__(self, *, expires_in: int = 3600):
        self.client_id, self.client_secret, self.expires_in = "elsa-client", "issuer-client-secret-0001", expires_in
        self.users = {"alice": "alice-password-123"}
        self.refresh_tokens = {"refresh-good-0001"}
        self.issued: list[dict] = []
        self.counter = 0
        # With rotation, a refresh token works once and the response carries its successor.
        self.rotate_refresh_tokens = False
        self.lock = threading.Lock()
        self.state: ServerState | None = None
        # {path: (status, headers, body)}: how a failing provider answers there instead (set by the test).
        self.failures: dict[str, tuple] = {}

    def respond(self, recorded):
        if recorded.path in self.failures:
            return self.failures[recorded.path]
        if recorded.path == "/.well-known/openid-configuration":
            return 200, {}, {"issuer": self.state.url, "token_endpoint": self.state.url + "/token"}
        if recorded.path != "/token" or recorded.method != "POST":
            return 404, {}, {"error": "not_found"}
        form = {k: v[0] for k, v in parse_qs(recorded.body.decode()).items()}
        client = basic_credentials(recorded) or (form.get("client_id"), form.get("client_secret"))
        if client != (self.client_id, self.client_secret):
            return 401, {}, {"error": "invalid_client"}
        grant = form.get("grant_type")
        if grant == "refresh_token" and form.get("refresh_token") not in self.refresh_tokens:
            return 400, {}, {"error": "invalid_grant"}
        if grant == "password" and self.users.get(form.get("username")) != form.get("password"):
            return 400, {}, {"error": "invalid_grant"}
        if grant not in ("client_credentials", "refresh_token", "password"):
            return 400, {}, {"error": "unsupported_grant_type"}
        with self.lock:
            self.counter += 1
            token = f"access-{self.counter}"
            self.issued.append(
                {"grant": grant, "form": form, "token": token, "basic": bool(basic_credentials(recorded))}
            )
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}
        if grant == "refresh_token" and self.rotate_refresh_tokens:
            with self.lock:
                self.refresh_tokens.discard(form["refresh_token"])
                body["refresh_token"] = f"refresh-rotated-{self.counter}"
                self.refresh_tokens.add(body["refresh_token"])
        return 200, {}, body

    def valid_tokens(self) -> set[str]:
        with self.lock:
            return {i["token"] for i in self.issued}


# --- Certificates ---------------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _issue(subject: str, issuer_name, issuer_key, *, ca=False, server=False):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name or _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    elif server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return cert, key


@dataclass
class Pki:
    ca_pem: str
    server_cert_pem: str
    server_key_pem: str
    client_cert_pem: str
    client_key_pem: str
    other_client_cert_pem: str
    other_client_key_pem: str

    def server_context(self, tmp: Path, *, require_client_cert: bool = True) -> ssl.SSLContext:
        cert_path, key_path, ca_path = tmp / "server.pem", tmp / "server.key", tmp / "ca.pem"
        cert_path.write_text(self.server_cert_pem)
        key_path.write_text(self.server_key_pem)
        ca_path.write_text(self.ca_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        context.load_verify_locations(ca_path)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
        return context


def make_pki() -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate it signed; plus a foreign client."""
    ca_cert, ca_key = _issue("Elsa Test CA", None, None, ca=True)
    server_cert, server_key = _issue("127.0.0.1", ca_cert.subject, ca_key, server=True)
    client_cert, client_key = _issue("elsa-executor", ca_cert.subject, ca_key)
    other_ca_cert, other_ca_key = _issue("Other CA", None, None, ca=True)
    other_cert, other_key = _issue("intruder", other_ca_cert.subject, other_ca_key)

    def pem(cert):
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    return Pki(
        ca_pem=pem(ca_cert),
        server_cert_pem=pem(server_cert),
        server_key_pem=_pem_key(server_key),
        client_cert_pem=pem(client_cert),
        client_key_pem=_pem_key(client_key),
        other_client_cert_pem=pem(other_cert),
        other_client_key_pem=_pem_key(other_key),
    )
