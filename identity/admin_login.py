"""The admin login: rate-limited per client IP and username like identity/login, failures audited."""

import functools

from django.conf import settings
from django_ratelimit.core import is_ratelimited

from audit.actors import Actor, client_ip
from elsa_site.errors import ratelimited_view


def _over_limit(request) -> bool:
    ip = client_ip(request) or "unknown"
    username = str(request.POST.get("username", ""))[:200].lower()
    rate = settings.ELSA_LOGIN_RATE
    by_ip = is_ratelimited(request, group="admin-login-ip", key=lambda g, r: ip, rate=rate, increment=True)
    by_user = bool(username) and is_ratelimited(
        request, group="admin-login-subject", key=lambda g, r: username, rate=rate, increment=True
    )
    return by_ip or by_user


def protect_admin_login(site) -> None:
    if getattr(site.login, "elsa_protected", False):
        return
    original = site.login

    @functools.wraps(original)
    def login(request, extra_context=None):
        if request.method == "POST" and _over_limit(request):
            from identity.services import login_failure_record

            login_failure_record(
                actor=Actor.anonymous(client_ip(request)),
                username=str(request.POST.get("username", "")),
                reason="rate_limited",
                event_type="identity.admin-login",
            )
            return ratelimited_view(request)
        return original(request, extra_context)

    login.elsa_protected = True  # type: ignore[attr-defined]
    site.login = login


def audit_admin_login_failure(sender, credentials=None, request=None, **kwargs) -> None:
    """Django's user_login_failed (the admin form): audit it, without the password."""
    from identity.services import login_failure_record

    username = str((credentials or {}).get("username", ""))
    ip = client_ip(request) if request is not None else None
    login_failure_record(
        actor=Actor.anonymous(ip), username=username, reason="invalid_credentials", event_type="identity.admin-login"
    )
