"""External OIDC access tokens against a JWKS served by a real HTTP server on 127.0.0.1."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.conftest import wait_until

pytestmark = pytest.mark.django_db
ME = "/elsa/api/identity/me"
ISSUER = "https://login.example.test/realm"
AUDIENCE = "elsa-api"


class JwksServer:
    """Serves {"keys": [...]} at /jwks and counts fetches; `status` and `delay` make it fail or lag."""

    def __init__(self):
        self.keys: list[dict] = []
        self.hits = 0
        self.status = 200
        self.delay = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.hits += 1
                time.sleep(server.delay)
                body = json.dumps({"keys": server.keys}).encode() if server.status == 200 else b""
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/jwks"

    def publish(self, *keys: "SigningKey"):
        self.keys = [k.jwk for k in keys]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class SigningKey:
    def __init__(self, kid: str, algorithm: str = "RS256"):
        self.kid = kid
        self.algorithm = algorithm
        if algorithm == "RS256":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.jwk = {**RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True), "kid": kid, "use": "sig"}
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.jwk = {**ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True), "kid": kid, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def token(self, **overrides) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "alice-123",
            "preferred_username": "alice",
            "iat": now,
            "exp": now + 300,
            "roles": ["workflow-admin"],
            "scope": "openid profile",
        }
        claims.update(overrides)
        return jwt.encode(claims, self.private, algorithm=self.algorithm, headers={"kid": self.kid})


@pytest.fixture
def jwks(settings):
    server = JwksServer()
    settings.ELSA_OIDC_ISSUERS = [{"issuer": ISSUER, "audience": AUDIENCE, "jwks_url": server.url}]
    settings.ELSA_OIDC_PERMISSION_MAP = {"workflow-admin": ["read:role", "read:user"], "profile": ["read:application"]}
    settings.ELSA_OIDC_JWKS_REFETCH_SECONDS = 0
    yield server
    server.close()


def get_me(client, token):
    return client.get(ME, HTTP_AUTHORIZATION=f"Bearer {token}")


def test_good_rs256_token_maps_roles_and_scopes_to_permissions(client, jwks):
    key = SigningKey("k1")
    jwks.publish(key)
    response = get_me(client, key.token())
    assert response.status_code == 200, response.content
    assert response.json() == {
        "type": "user",
        "id": f"{ISSUER}|alice-123",
        "name": "alice",
        "permissions": ["read:application", "read:role", "read:user"],
    }
    assert client.get("/elsa/api/identity/roles", HTTP_AUTHORIZATION=f"Bearer {key.token()}").status_code == 200
    assert client.post("/elsa/api/identity/roles", {}, HTTP_AUTHORIZATION=f"Bearer {key.token()}").status_code == 403


def test_good_es256_token_is_accepted(client, jwks):
    key = SigningKey("ec1", "ES256")
    jwks.publish(key)
    assert get_me(client, key.token()).status_code == 200


def test_jwks_is_cached_between_requests(client, jwks):
    key = SigningKey("k1")
    jwks.publish(key)
    for _ in range(3):
        assert get_me(client, key.token()).status_code == 200
    assert jwks.hits == 1


def test_wrong_audience_is_rejected(client, jwks):
    key = SigningKey("k1")
    jwks.publish(key)
    assert get_me(client, key.token(aud="another-api")).status_code == 401


def test_wrong_issuer_is_rejected(client, jwks):
    key = SigningKey("k1")
    jwks.publish(key)
    assert get_me(client, key.token(iss="https://evil.example.test/")).status_code == 401


def test_expired_token_is_rejected(client, jwks):
    key = SigningKey("k1")
    jwks.publish(key)
    past = int(time.time()) - 3600
    assert get_me(client, key.token(iat=past - 300, exp=past)).status_code == 401


def test_unknown_kid_is_rejected_after_one_refetch(client, jwks):
    key = SigningKey("k1")
    jwks.publish(key)
    assert get_me(client, key.token()).status_code == 200
    stranger = SigningKey("k-unknown")
    assert get_me(client, stranger.token()).status_code == 401
    assert jwks.hits == 2  # the first fetch, then exactly one refetch for the unknown kid


def test_unknown_kid_refetches_are_rate_limited(client, jwks, settings):
    settings.ELSA_OIDC_JWKS_REFETCH_SECONDS = 60
    key = SigningKey("k1")
    jwks.publish(key)
    assert get_me(client, key.token()).status_code == 200
    for i in range(5):
        assert get_me(client, SigningKey(f"random-{i}").token()).status_code == 401
    assert jwks.hits == 1


def test_key_rotation_is_picked_up_by_refetching_on_the_new_kid(client, jwks):
    old = SigningKey("2026-01")
    jwks.publish(old)
    assert get_me(client, old.token()).status_code == 200
    new = SigningKey("2026-02")
    jwks.publish(new)
    assert get_me(client, new.token()).status_code == 200
    assert jwks.hits == 2


def test_alg_none_is_rejected(client, jwks):
    key = SigningKey("k1")
    jwks.publish(key)
    claims = jwt.decode(key.token(), options={"verify_signature": False})
    forged = jwt.encode(claims, None, algorithm="none", headers={"kid": "k1"})
    assert get_me(client, forged).status_code == 401


def test_hs256_signed_with_the_public_key_is_rejected(client, jwks):
    key = SigningKey("k1")
    jwks.publish(key)
    claims = jwt.decode(key.token(), options={"verify_signature": False})
    # PyJWT refuses PEM keys as HMAC secrets, so forge the header and signature by hand.
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    payload = b64(json.dumps(claims).encode())
    signature = hmac.new(key.public_pem(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{payload}.{b64(signature)}"
    assert get_me(client, forged).status_code == 401


def test_rs256_header_with_an_ec_key_is_rejected(client, jwks):
    ec_key = SigningKey("k1", "ES256")
    jwks.publish(ec_key)
    rsa_key = SigningKey("k1")  # same kid, different key type and algorithm
    assert get_me(client, rsa_key.token()).status_code == 401


def test_token_of_an_unconfigured_issuer_is_rejected(client, jwks, settings):
    settings.ELSA_OIDC_ISSUERS = []
    key = SigningKey("k1")
    jwks.publish(key)
    assert get_me(client, key.token()).status_code == 401
    assert jwks.hits == 0


def test_jwks_file_is_supported(client, jwks, settings, tmp_path):
    key = SigningKey("file-key", "ES256")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [key.jwk]}))
    settings.ELSA_OIDC_ISSUERS = [{"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": str(path)}]
    assert get_me(client, key.token()).status_code == 200


def test_unreachable_jwks_is_fetched_at_most_once_per_refetch_interval(client, jwks, settings):
    settings.ELSA_OIDC_JWKS_REFETCH_SECONDS = 30
    jwks.status = 500
    key = SigningKey("k1")
    for _ in range(10):
        assert get_me(client, key.token()).status_code == 401
    assert jwks.hits == 1


def test_slow_jwks_fetch_does_not_hold_up_other_requests(jwks, settings):
    from identity import oidc

    settings.ELSA_OIDC_JWKS_REFETCH_SECONDS = 30
    jwks.status, jwks.delay = 500, 1.0
    token = SigningKey("k1").token()
    started = time.monotonic()
    threads = [threading.Thread(target=oidc.oidc_principal, args=(token, ISSUER)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # One request waits for the one fetch; the others fail at once instead of queueing behind it.
    assert jwks.hits == 1
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    "document", [[], {"keys": "abc"}, {"keys": ["abc"]}, {"keys": [{"kty": "RSA", "kid": ["x"]}]}, "null"]
)
def test_malformed_jwks_document_is_401_not_500(client, jwks, settings, tmp_path, document):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(document))
    settings.ELSA_OIDC_ISSUERS = [{"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": str(path)}]
    assert get_me(client, SigningKey("k1").token()).status_code == 401


@pytest.fixture
def refresh_every_request(settings):
    """Every request tries to refresh the JWKS, so keys are stale as soon as a refresh fails."""
    settings.ELSA_OIDC_JWKS_CACHE_SECONDS = 0
    settings.ELSA_OIDC_JWKS_REFETCH_SECONDS = 0


def test_last_good_keys_verify_while_the_issuer_is_down_within_the_staleness_bound(
    client, jwks, settings, refresh_every_request
):
    settings.ELSA_OIDC_JWKS_MAX_STALE_SECONDS = 3600
    key = SigningKey("k1")
    jwks.publish(key)
    assert get_me(client, key.token()).status_code == 200
    jwks.close()  # the issuer is unreachable: connection refused
    assert get_me(client, key.token()).status_code == 200


def test_keys_past_the_staleness_bound_are_refused_until_the_issuer_answers_again(
    client, jwks, settings, refresh_every_request, caplog
):
    settings.ELSA_OIDC_JWKS_MAX_STALE_SECONDS = 1
    key = SigningKey("k1")
    jwks.publish(key)
    token = key.token()
    assert get_me(client, token).status_code == 200
    jwks.close()
    with caplog.at_level("WARNING", logger="elsa.identity"):
        wait_until(lambda: get_me(client, token).status_code == 401, timeout=10, message="stale keys refused")
    response = get_me(client, token)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"
    assert "Bearer" in response["WWW-Authenticate"]
    refusals = [r for r in caplog.records if "ELSA_OIDC_JWKS_MAX_STALE_SECONDS" in r.getMessage()]
    assert refusals and all(r.issuer == ISSUER for r in refusals)
    assert token not in caplog.text
    # The issuer answers again (on a new port: the old one is gone) and its keys verify again.
    revived = JwksServer()
    try:
        revived.publish(key)
        settings.ELSA_OIDC_ISSUERS = [{"issuer": ISSUER, "audience": AUDIENCE, "jwks_url": revived.url}]
        assert get_me(client, token).status_code == 200
    finally:
        revived.close()


def test_no_staleness_allowed_refuses_tokens_as_soon_as_a_refresh_fails(client, jwks, settings, refresh_every_request):
    settings.ELSA_OIDC_JWKS_MAX_STALE_SECONDS = 0
    key = SigningKey("k1")
    jwks.publish(key)
    assert get_me(client, key.token()).status_code == 200
    jwks.close()
    assert get_me(client, key.token()).status_code == 401
