"""Executors API: list, create, read, update, delete and test connection (thin views over the services)."""

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.actors import actor_from_request
from elsa_site.errors import InvalidInput
from identity.permissions import HasPermission
from workflows.executors import selectors, services
from workflows.executors.serializers import (
    ExecutorInputSerializer,
    ExecutorOutputSerializer,
    TestConnectionOutputSerializer,
)

READ = HasPermission("read:executors")
WRITE = HasPermission("write:executors")
DELETE = HasPermission("delete:executors")


class PerMethodPermissionApi(APIView):
    """A view whose HTTP methods need different permissions (``method_permissions``; default the first)."""

    method_permissions: dict = {}

    def get_permissions(self):
        permission = self.method_permissions.get(self.request.method, self.permission_classes[0])
        return [permission()]


def _input(request, *, partial: bool, current: bool = False) -> dict:
    serializer = ExecutorInputSerializer(data=request.data, partial=partial)
    serializer.is_valid(raise_exception=True)
    # The SSRF exemption is an administrator's decision: echoing the current value back is fine,
    # asking for a different one through the API is refused rather than silently ignored.
    if "internal" in request.data and request.data["internal"] is not current:
        raise InvalidInput("internal can only be changed by an administrator, in the admin.")
    # Only the fields the client sent: a PATCH leaves the others (and stored secrets) untouched.
    return {name: request.data[name] for name in serializer.validated_data if name in request.data}


class ExecutorListApi(PerMethodPermissionApi):
    permission_classes = [READ]
    method_permissions = {"POST": WRITE}

    @extend_schema(responses=ExecutorOutputSerializer(many=True))
    def get(self, request):
        try:
            limit = min(max(int(request.query_params.get("limit", 100)), 1), 500)
            offset = max(int(request.query_params.get("offset", 0)), 0)
        except ValueError as exc:
            raise exceptions.ValidationError({"limit": "limit and offset must be integers."}) from exc
        queryset = selectors.executor_list()
        items = queryset[offset : offset + limit]
        return Response({"items": ExecutorOutputSerializer(items, many=True).data, "count": queryset.count()})

    @extend_schema(request=ExecutorInputSerializer, responses={201: ExecutorOutputSerializer})
    def post(self, request):
        executor = services.executor_create(data=_input(request, partial=False), actor=actor_from_request(request))
        return Response(ExecutorOutputSerializer(executor).data, status=status.HTTP_201_CREATED)


class ExecutorDetailApi(PerMethodPermissionApi):
    permission_classes = [READ]
    method_permissions = {"PATCH": WRITE, "DELETE": DELETE}

    @extend_schema(responses=ExecutorOutputSerializer)
    def get(self, request, executor_id):
        return Response(ExecutorOutputSerializer(selectors.executor_get(executor_id)).data)

    @extend_schema(request=ExecutorInputSerializer, responses=ExecutorOutputSerializer)
    def patch(self, request, executor_id):
        executor = selectors.executor_get(executor_id)
        data = _input(request, partial=True, current=executor.internal)
        executor = services.executor_update(executor=executor, data=data, actor=actor_from_request(request))
        return Response(ExecutorOutputSerializer(executor).data)

    @extend_schema(responses={204: None})
    def delete(self, request, executor_id):
        services.executor_delete(executor=selectors.executor_get(executor_id), actor=actor_from_request(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ExecutorTestConnectionApi(APIView):
    permission_classes = [WRITE]

    @extend_schema(request=None, responses=TestConnectionOutputSerializer)
    def post(self, request, executor_id):
        result = services.executor_test_connection(
            executor=selectors.executor_get(executor_id), actor=actor_from_request(request)
        )
        return Response(TestConnectionOutputSerializer(result).data)
