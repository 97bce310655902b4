"""Test-only URLs: the project's URLs plus API views that fail in known ways."""

from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from elsa_site.errors import Conflict
from elsa_site.urls import handler400, handler403, handler404, handler500  # noqa: F401
from elsa_site.urls import urlpatterns as project_urlpatterns


class _Base(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]


class Crash(_Base):
    def get(self, request):
        raise RuntimeError("password=hunter2 leaked into an exception message")


class Echo(_Base):
    def post(self, request):
        return Response({"received": sorted(request.data)})


class DomainConflict(_Base):
    def get(self, request):
        raise Conflict("The instance is already finished.")


urlpatterns = [
    path("elsa/api/_test/crash", Crash.as_view()),
    path("elsa/api/_test/echo", Echo.as_view()),
    path("elsa/api/_test/conflict", DomainConflict.as_view()),
    *project_urlpatterns,
]
