"""WSGI entry point for gunicorn."""

import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

from elsa_site.heap import freeze_startup_heap

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "elsa_site.settings")
application = get_wsgi_application()
# Import the URLconf, and with it every view, now rather than on the first request, and keep the
# garbage collector off it all (elsa_site.heap).
get_resolver().url_patterns  # noqa: B018 - the property imports the URLconf
freeze_startup_heap()
