"""Who did it: the acting principal and client IP, derived from a request or named explicitly."""

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class Actor:
    """The principal behind an audited action: user, application, system or anonymous."""

    type: str
    id: str = ""
    ip: str | None = None
    name: str = ""

    @classmethod
    def system(cls, name: str = "system") -> "Actor":
        return cls(type="system", id=name, name=name)

    @classmethod
    def anonymous(cls, ip: str | None = None) -> "Actor":
        return cls(type="anonymous", ip=ip)


def client_ip(request) -> str | None:
    """The client's IP: REMOTE_ADDR, or X-Forwarded-For only through the trusted proxies.

    With ELSA_TRUSTED_PROXY_COUNT = N, the Nth address from the right of X-Forwarded-For was
    appended by our outermost trusted proxy; anything left of it is client-supplied and may be
    forged, so it is never used. With 0 (the default) the header is ignored.
    """
    remote = request.META.get("REMOTE_ADDR") or None
    trusted = getattr(settings, "ELSA_TRUSTED_PROXY_COUNT", 0)
    if trusted <= 0:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if len(forwarded) < trusted:
        return remote
    return forwarded[-trusted]


def actor_from_request(request) -> Actor:
    """The authenticated user or application of a request, else anonymous; with its client IP.

    Principals expose `actor_type` ("user" or "application"), `actor_id` and `actor_name`;
    audit knows no identity classes, only these attributes.
    """
    ip = client_ip(request)
    principal = getattr(request, "user", None)
    if principal is None or not getattr(principal, "is_authenticated", False):
        return Actor.anonymous(ip)
    return Actor(
        type=getattr(principal, "actor_type", "user"),
        id=str(getattr(principal, "actor_id", getattr(principal, "pk", ""))),
        ip=ip,
        name=str(getattr(principal, "actor_name", getattr(principal, "username", ""))),
    )
