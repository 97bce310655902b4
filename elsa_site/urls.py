"""Root URLs: health, admin, the API under /elsa/api/, its schema and docs."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from elsa_site import health
from elsa_site.metrics import MetricsView

urlpatterns = [
    path("health/live", health.live, name="health-live"),
    path("health/ready", health.ready, name="health-ready"),
    path("metrics", MetricsView.as_view(), name="metrics"),
    # The anonymous resume endpoint is the busiest API route: resolved before the others (no
    # pattern of another app matches a bookmarks path, so the order changes no resolution; each
    # include tried before it raised and caught a Resolver404 on every resume).
    path("elsa/api/", include("bookmarks.urls")),
    path("admin/", admin.site.urls),
    path("elsa/api/schema", SpectacularAPIView.as_view(), name="api-schema"),
    path("elsa/api/docs", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("elsa/api/identity/", include("identity.urls")),
    path("elsa/api/", include("audit.urls")),
    path("elsa/api/", include("workflows.urls")),
    path("elsa/api/", include("workflows.executors.urls")),
    path("", include("bookmarks.pages")),
]

handler400 = "elsa_site.errors.handler400"
handler403 = "elsa_site.errors.handler403"
handler404 = "elsa_site.errors.handler404"
handler500 = "elsa_site.errors.handler500"
