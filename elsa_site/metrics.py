"""Prometheus metrics: HTTP request counts and latencies, served at /metrics to `read:metrics`."""

import os
import time

from django.http import HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from rest_framework.views import APIView

from identity.permissions import HasPermission

HTTP_REQUESTS = Counter("elsa_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
HTTP_LATENCY = Histogram("elsa_http_request_duration_seconds", "HTTP request latency", ["method", "route"])


# Any token is a valid HTTP method to gunicorn: labelling made-up ones as "other" bounds the series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetricsMiddleware:
    """Counts requests by route pattern (never the raw path: ids and tokens would explode cardinality)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = match.route if match and match.route else "unmatched"
        method = request.method if request.method in KNOWN_METHODS else "other"
        HTTP_REQUESTS.labels(method, route, str(response.status_code)).inc()
        HTTP_LATENCY.labels(method, route).observe(time.perf_counter() - started)
        return response


def _registry():
    # With several gunicorn processes, PROMETHEUS_MULTIPROC_DIR aggregates every process's samples.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    from prometheus_client import REGISTRY

    return REGISTRY


class MetricsView(APIView):
    """Prometheus text exposition; requires `read:metrics`."""

    permission_classes = [HasPermission("read:metrics")]
    schema = None

    def get(self, request):
        return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
