"""Outbound address policy: https in production, and no private, loopback or metadata targets (SSRF)."""

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

from elsa_site.errors import DomainError, InvalidInput

# Cloud instance-metadata services hand out the host's own credentials: refused even for internal
# executors, since no partner service lives there.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)


class OutboundRefused(DomainError):
    """An outbound call refused by policy before any connection was made."""

    http_status = 400
    code = "outbound_refused"


def parse_base_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL without credentials or fragments; InvalidInput otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput("base_url is not a valid URL.") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("base_url must be an http or https URL with a host.")
    # Credentials in the URL would be logged and shown; they belong in the authentication settings.
    if parts.username or parts.password:
        raise InvalidInput("base_url may not contain credentials; use the authentication settings.")
    if parts.query or parts.fragment:
        raise InvalidInput("base_url may not contain a query or fragment.")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def require_secure_scheme(url: str) -> None:
    """In production, credentials and payloads travel only over https, except to allowlisted hosts."""
    scheme, host, _ = parse_base_url(url)
    if settings.ELSA_ENV != "production" or scheme == "https":
        return
    if host.lower() in {h.lower() for h in settings.ELSA_EXECUTOR_HTTP_ALLOWLIST}:
        return
    raise OutboundRefused(f"Plain http to {host} is not allowed in production (ELSA_EXECUTOR_HTTP_ALLOWLIST).")


# IPv6 forms that reach an IPv4 address through a gateway or translator: NAT64's well-known prefix
# (RFC 6052, the IPv4 address in the last 32 bits) and the deprecated IPv4-compatible form (::a.b.c.d).
# 6to4 (2002::/16) is read by ipaddress itself (IPv6Address.sixtofour). NAT64's local-use prefix
# (RFC 8215) is a site's own translator, never a public one.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address that `ip` reaches through a standard mapping or translation, if any."""
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):  # :: and ::1 are IPv6's own
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, *, internal: bool) -> str | None:
    """Why `ip` may not be called, or None when it may."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            # ::ffff:127.0.0.1, 64:ff9b::7f00:1 and 2002:7f00:1:: all reach 127.0.0.1 (directly or
            # through a translator or relay): judge the IPv4 address they carry.
            ip = embedded
        elif ip in _NAT64_LOCAL_USE and not internal:
            return "a private or reserved address"
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if internal:
        return None
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    # is_global is False for private, unique-local, shared (CGNAT), reserved and documentation ranges.
    if ip.is_private or not ip.is_global:
        return "a private or reserved address"
    return None


def resolve_target(host: str, port: int, *, internal: bool) -> str:
    """Resolve `host` now and return the IP to connect to, refusing forbidden addresses.

    Every address the name resolves to is checked, not only the first: a name that resolves to
    one public and one private address could otherwise be steered to the private one. The caller
    connects to the returned IP (pinned), so a second lookup cannot be rebound elsewhere.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OutboundRefused(f"The host {host} could not be resolved.") from exc
    addresses = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        refusal = address_refusal(ip, internal=internal)
        if refusal:
            raise OutboundRefused(f"The host {host} resolves to {refusal}; calls there are refused.")
        addresses.append(ip)
    if not addresses:
        raise OutboundRefused(f"The host {host} could not be resolved.")
    # Prefer IPv4 where both exist: the common case for partner APIs, and predictable in tests.
    addresses.sort(key=lambda a: a.version)
    return str(addresses[0])
