"""Production hardening: HTTPS only, HSTS, secure cookies; refuses to start when misconfigured."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import CACHE_IS_SHARED, DEBUG, env

if DEBUG:
    raise ImproperlyConfigured("ELSA_DEBUG must be off when ELSA_ENV=production.")
if not CACHE_IS_SHARED:
    # Rate limits, circuit breakers and locks must be shared by every process in production.
    raise ImproperlyConfigured("CACHE_URL must point at a shared cache (redis://...) when ELSA_ENV=production.")

SECURE_SSL_REDIRECT = env.bool("ELSA_SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^health/"]
SECURE_HSTS_SECONDS = 31536000
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = env.bool("ELSA_HSTS_PRELOAD", default=True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SILENCED_SYSTEM_CHECKS = list[str]()  # nothing is silenced in production
