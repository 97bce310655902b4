"""Outbound safety: SSRF refusals, https in production, redirects, and mTLS against a local TLS server."""

import ipaddress

import pytest

from elsa_site.errors import InvalidInput
from tests.workflows.executors.servers import make_pki, ok, serve
from workflows.executors.client import PermanentError
from workflows.executors.services import executor_call
from workflows.executors.ssrf import OutboundRefused, address_refusal, resolve_target

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 - an address under test, not a bind
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "::",
    ],
)
def test_non_public_addresses_are_refused(address):
    assert address_refusal(ipaddress.ip_address(address), internal=False)


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::7f00:1",  # NAT64 (RFC 6052) of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of the metadata address 169.254.169.254
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b:1::a00:1",  # NAT64 local-use prefix (RFC 8215)
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "::127.0.0.1",  # IPv4-compatible (deprecated) form of 127.0.0.1
        "::10.0.0.1",
    ],
)
def test_ipv6_forms_of_non_public_ipv4_addresses_are_refused(address):
    assert address_refusal(ipaddress.ip_address(address), internal=False)


def test_ipv6_forms_of_public_ipv4_addresses_are_allowed():
    assert address_refusal(ipaddress.ip_address("64:ff9b::808:808"), internal=False) is None
    assert address_refusal(ipaddress.ip_address("2002:808:808::1"), internal=False) is None


def test_internal_executors_never_reach_metadata_through_an_ipv6_form():
    assert address_refusal(ipaddress.ip_address("64:ff9b::a9fe:a9fe"), internal=True)
    assert address_refusal(ipaddress.ip_address("2002:a9fe:a9fe::1"), internal=True)
    assert address_refusal(ipaddress.ip_address("64:ff9b::a00:1"), internal=True) is None


def test_public_addresses_are_allowed():
    assert address_refusal(ipaddress.ip_address("93.184.216.34"), internal=False) is None
    assert address_refusal(ipaddress.ip_address("2606:4700::1111"), internal=False) is None


def test_internal_executors_may_reach_private_addresses_but_never_metadata():
    assert address_refusal(ipaddress.ip_address("10.0.0.5"), internal=True) is None
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), internal=True) is None
    assert address_refusal(ipaddress.ip_address("169.254.169.254"), internal=True)
    assert address_refusal(ipaddress.ip_address("fd00:ec2::254"), internal=True)


def test_a_name_resolving_to_loopback_is_refused():
    with pytest.raises(OutboundRefused, match="loopback"):
        resolve_target("localhost", 80, internal=False)


def test_call_to_a_loopback_server_is_refused_unless_internal(make_executor, actor):
    with serve(ok) as server:
        executor = make_executor(server.url, internal=False)
        with pytest.raises(OutboundRefused, match="loopback"):
            executor_call(executor=executor, endpoint="analyze", actor=actor)
        assert server.count() == 0
        internal = make_executor(server.url, internal=True)
        assert executor_call(executor=internal, endpoint="analyze", actor=actor).status == 200


@pytest.mark.parametrize("url", ["http://10.0.0.1/api", "http://169.254.169.254/latest", "http://[::1]:8080"])
def test_calls_to_private_and_metadata_addresses_are_refused(make_executor, actor, url):
    executor = make_executor(url, internal=False)
    with pytest.raises(OutboundRefused):
        executor_call(executor=executor, endpoint="analyze", actor=actor)


def test_production_requires_https_base_urls(make_executor, settings):
    settings.ELSA_ENV = "production"
    settings.ELSA_EXECUTOR_HTTP_ALLOWLIST = ["partner.internal"]
    with pytest.raises(OutboundRefused, match="Plain http"):
        make_executor("http://partner.example.com")
    assert make_executor("https://partner.example.com").base_url == "https://partner.example.com"
    assert make_executor("http://partner.internal:8080").base_url == "http://partner.internal:8080"


def test_production_refuses_plain_http_at_call_time_too(make_executor, actor, settings):
    with serve(ok) as server:
        executor = make_executor(server.url)
        settings.ELSA_ENV = "production"
        with pytest.raises(OutboundRefused, match="Plain http"):
            executor_call(executor=executor, endpoint="analyze", actor=actor)
        assert server.count() == 0


@pytest.mark.parametrize("url", ["ftp://x.example", "http://user:pw@x.example", "https://x.example/?q=1", "nonsense"])
def test_base_urls_must_be_plain_http_urls(make_executor, url):
    with pytest.raises(InvalidInput):
        make_executor(url)


def test_redirects_to_another_host_are_not_followed(make_executor, actor):
    with serve(ok) as elsewhere:

        def redirect(recorded):
            return 302, {"Location": elsewhere.url.replace("127.0.0.1", "localhost") + "/steal"}, b""

        with serve(redirect) as server:
            executor = make_executor(server.url)
            with pytest.raises(OutboundRefused, match="another host"):
                executor_call(executor=executor, endpoint="analyze", actor=actor)
        assert elsewhere.count() == 0


def test_redirects_on_the_same_host_are_followed(make_executor, actor):
    def respond(recorded):
        if recorded.path == "/v1/analyze":
            return 307, {"Location": "/v2/analyze"}, b""
        return 200, {}, {"moved": recorded.path, "method": recorded.method}

    with serve(respond) as server:
        executor = make_executor(server.url)
        result = executor_call(executor=executor, endpoint="analyze", body={"a": 1}, actor=actor)
    assert result.body == {"moved": "/v2/analyze", "method": "POST"}


def test_a_same_host_redirect_keeps_the_api_key_query_parameter_but_not_the_workflows_query(make_executor, actor):
    def respond(recorded):
        if recorded.path == "/v1/analyze":
            return 307, {"Location": "/v2/analyze?page=2"}, b""
        return (200 if recorded.query.get("api_key") == ["k-0123456789abcdef"] else 401), {}, {"q": recorded.query}

    authentication = {"type": "api_key", "config": {"key": "k-0123456789abcdef", "query_param": "api_key"}}
    with serve(respond) as server:
        executor = make_executor(server.url, authentication=authentication)
        result = executor_call(executor=executor, endpoint="analyze", query={"trace": "t1"}, actor=actor)
    assert result.status == 200
    assert result.body == {"q": {"page": ["2"], "api_key": ["k-0123456789abcdef"]}}


def test_path_parameters_cannot_traverse(make_executor, actor):
    with serve(ok) as server:
        executor = make_executor(server.url)
        with pytest.raises(InvalidInput):
            executor_call(executor=executor, endpoint="item", path_params={"id": ".."}, actor=actor)
        result = executor_call(executor=executor, endpoint="item", path_params={"id": "../admin?x=1"}, actor=actor)
        assert server.requests[-1].path == "/v1/items/..%2Fadmin%3Fx%3D1"
        assert result.status == 200


@pytest.fixture(scope="module")
def pki():
    return make_pki()


def test_mtls_client_certificate_is_presented(make_executor, actor, pki, tmp_path):
    tls = {"client_certificate": pki.client_cert_pem, "client_key": pki.client_key_pem, "ca_bundle": pki.ca_pem}
    with serve(ok, tls=pki.server_context(tmp_path)) as server:
        executor = make_executor(server.url, tls=tls)
        result = executor_call(executor=executor, endpoint="analyze", actor=actor)
    assert (result.kind, result.status) == ("success", 200)


def test_mtls_server_refuses_a_client_without_certificate(make_executor, actor, pki, tmp_path):
    with serve(ok, tls=pki.server_context(tmp_path)) as server:
        executor = make_executor(server.url, tls={"ca_bundle": pki.ca_pem})
        with pytest.raises(PermanentError, match="TLS"):
            executor_call(executor=executor, endpoint="analyze", actor=actor)
        assert server.count() == 0


def test_mtls_server_refuses_a_certificate_from_another_ca(make_executor, actor, pki, tmp_path):
    tls = {"client_certificate": pki.other_client_cert_pem, "client_key": pki.other_client_key_pem}
    with serve(ok, tls=pki.server_context(tmp_path)) as server:
        executor = make_executor(server.url, tls={**tls, "ca_bundle": pki.ca_pem})
        with pytest.raises(PermanentError, match="TLS"):
            executor_call(executor=executor, endpoint="analyze", actor=actor)
        assert server.count() == 0


def test_server_certificate_must_chain_to_the_trusted_cas(make_executor, actor, pki, tmp_path):
    with serve(ok, tls=pki.server_context(tmp_path, require_client_cert=False)) as server:
        executor = make_executor(server.url)  # public CAs only: the test CA is unknown
        with pytest.raises(PermanentError, match="TLS"):
            executor_call(executor=executor, endpoint="analyze", actor=actor)
        trusting = make_executor(server.url, tls={"ca_bundle": pki.ca_pem})
        assert executor_call(executor=trusting, endpoint="analyze", actor=actor).status == 200


def test_the_checked_address_is_pinned_and_the_host_name_kept(make_executor, actor):
    with serve(ok) as server:
        named = server.url.replace("127.0.0.1", "localhost")
        executor = make_executor(named, internal=True)
        assert executor_call(executor=executor, endpoint="analyze", actor=actor).status == 200
        assert server.requests[0].headers["host"] == named.removeprefix("http://")


def test_tls_verifies_the_host_name_while_connecting_to_the_pinned_address(make_executor, actor, pki, tmp_path):
    with serve(ok, tls=pki.server_context(tmp_path, require_client_cert=False)) as server:
        named = server.url.replace("127.0.0.1", "localhost")
        executor = make_executor(named, tls={"ca_bundle": pki.ca_pem})
        assert executor_call(executor=executor, endpoint="analyze", actor=actor).status == 200
        assert server.requests[0].headers["host"] == named.removeprefix("https://")


def test_the_connection_uses_the_checked_address_without_a_second_lookup(make_executor, actor, monkeypatch):
    """DNS rebinding: a name may resolve differently on each lookup, so only checked answers are used."""
    import socket

    real_getaddrinfo = socket.getaddrinfo
    lookups = []

    def resolver(host, *args, **kwargs):
        if host == "rebind.test":
            lookups.append(host)
            # Every answer after the second points elsewhere: a lookup by the HTTP client would fail.
            host = "127.0.0.1" if len(lookups) <= 2 else "127.0.0.2"
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with serve(ok) as server:
        url = server.url.replace("127.0.0.1", "rebind.test")
        executor = make_executor(url, internal=True)
        result = executor_call(executor=executor, endpoint="analyze", actor=actor)
        assert result.status == 200
        assert server.requests[0].headers["host"] == url.removeprefix("http://")
    # One lookup for the policy check before the breaker, one checked and pinned for the connection.
    assert len(lookups) == 2
