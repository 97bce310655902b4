"""HTTP edge of the workflows app: definitions, execution, instances and activity executions."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.actors import actor_from_request
from identity.permissions import HasPermission
from workflows import selectors, services
from workflows.serializers import (
    ActivityExecutionSerializer,
    DefinitionDetailSerializer,
    DefinitionQuerySerializer,
    DefinitionSerializer,
    ExecuteResultSerializer,
    ExecuteSerializer,
    InstanceDetailSerializer,
    InstanceQuerySerializer,
    InstanceSerializer,
    PageQuerySerializer,
    PublishSerializer,
    VersionQuerySerializer,
)

READ_DEFINITIONS = HasPermission("read:workflow-definitions")
WRITE_DEFINITIONS = HasPermission("write:workflow-definitions")
DELETE_DEFINITIONS = HasPermission("delete:workflow-definitions")
PUBLISH_DEFINITIONS = HasPermission("publish:workflow-definitions")
RETRACT_DEFINITIONS = HasPermission("retract:workflow-definitions")
EXEC_DEFINITIONS = HasPermission("exec:workflow-definitions")
READ_INSTANCES = HasPermission("read:workflow-instances")
CANCEL_INSTANCES = HasPermission("cancel:workflow-instances")
DELETE_INSTANCES = HasPermission("delete:workflow-instances")
READ_EXECUTIONS = HasPermission("read:activity-execution")


class PerMethodPermissionApi(APIView):
    """A view whose methods need different permissions: ``method_permissions`` maps a method to one.

    ``permission_classes`` holds the permission of the safe methods (GET, HEAD, OPTIONS).
    """

    method_permissions: dict = {}

    def get_permissions(self):
        permission = self.method_permissions.get(self.request.method, self.permission_classes[0])
        return [permission()]


def _page(query_serializer_class, request):
    query = query_serializer_class(data=request.query_params)
    query.is_valid(raise_exception=True)
    return query.validated_data


def _definition_detail(definition, version: int | None = None) -> dict:
    shown = selectors.workflow_definition_version_get(definition=definition, version=version)
    return DefinitionDetailSerializer(definition, context={"version": shown}).data


class DefinitionListApi(PerMethodPermissionApi):
    """GET workflow-definitions (read), POST workflow-definitions (write): the body is the document."""

    permission_classes = [READ_DEFINITIONS]
    method_permissions = {"POST": WRITE_DEFINITIONS}

    @extend_schema(parameters=[DefinitionQuerySerializer], responses=DefinitionSerializer(many=True))
    def get(self, request):
        params = _page(DefinitionQuerySerializer, request)
        items, count = selectors.paginate(
            selectors.workflow_definition_list(filters=params), offset=params["offset"], limit=params["limit"]
        )
        return Response(
            {
                "items": DefinitionSerializer(items, many=True).data,
                "count": count,
                "offset": params["offset"],
                "limit": params["limit"],
            }
        )

    @extend_schema(request=dict, responses={201: DefinitionDetailSerializer})
    def post(self, request):
        definition = services.workflow_definition_create(document=request.data, actor=actor_from_request(request))
        return Response(_definition_detail(definition), status=status.HTTP_201_CREATED)


class DefinitionDetailApi(PerMethodPermissionApi):
    """GET (read; ?version=n), PUT (write: a new draft version), DELETE (delete) a definition."""

    permission_classes = [READ_DEFINITIONS]
    method_permissions = {"PUT": WRITE_DEFINITIONS, "DELETE": DELETE_DEFINITIONS}

    @extend_schema(parameters=[VersionQuerySerializer], responses=DefinitionDetailSerializer)
    def get(self, request, definition_id):
        query = _page(VersionQuerySerializer, request)
        definition = selectors.workflow_definition_get(definition_id=definition_id)
        return Response(_definition_detail(definition, query.get("version")))

    @extend_schema(request=dict, responses=DefinitionDetailSerializer)
    def put(self, request, definition_id):
        definition = selectors.workflow_definition_get(definition_id=definition_id)
        definition = services.workflow_definition_update(
            definition=definition, document=request.data, actor=actor_from_request(request)
        )
        return Response(_definition_detail(definition))

    @extend_schema(responses={204: None})
    def delete(self, request, definition_id):
        definition = selectors.workflow_definition_get(definition_id=definition_id)
        services.workflow_definition_delete(definition=definition, actor=actor_from_request(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class DefinitionPublishApi(APIView):
    """POST workflow-definitions/{id}/publish: publish the latest (or the given) version."""

    permission_classes = [PUBLISH_DEFINITIONS]

    @extend_schema(request=PublishSerializer, responses=DefinitionDetailSerializer)
    def post(self, request, definition_id):
        body = PublishSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        definition = selectors.workflow_definition_get(definition_id=definition_id)
        definition = services.workflow_definition_publish(
            definition=definition, version=body.validated_data.get("version"), actor=actor_from_request(request)
        )
        return Response(_definition_detail(definition, definition.published_version.version))


class DefinitionRetractApi(APIView):
    """POST workflow-definitions/{id}/retract: stop new instances (running ones continue)."""

    permission_classes = [RETRACT_DEFINITIONS]

    @extend_schema(request=None, responses=DefinitionDetailSerializer)
    def post(self, request, definition_id):
        definition = selectors.workflow_definition_get(definition_id=definition_id)
        definition = services.workflow_definition_retract(definition=definition, actor=actor_from_request(request))
        return Response(_definition_detail(definition))


class DefinitionExecuteApi(APIView):
    """POST workflow-definitions/{id}/execute: {input} -> 202 {instance_id, status}; honours Idempotency-Key."""

    permission_classes = [EXEC_DEFINITIONS]

    @extend_schema(
        request=ExecuteSerializer,
        responses={202: ExecuteResultSerializer},
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False)],
    )
    def post(self, request, definition_id):
        body = ExecuteSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        definition = selectors.workflow_definition_get(definition_id=definition_id)
        instance = services.workflow_definition_execute(
            definition=definition,
            input=body.validated_data.get("input"),
            actor=actor_from_request(request),
            idempotency_key=request.headers.get("Idempotency-Key"),
        )
        return Response(ExecuteResultSerializer(instance).data, status=status.HTTP_202_ACCEPTED)


class InstanceListApi(APIView):
    """GET workflow-instances: filters status, definition, created_after, created_before; offset pagination."""

    permission_classes = [READ_INSTANCES]

    @extend_schema(parameters=[InstanceQuerySerializer], responses=InstanceSerializer(many=True))
    def get(self, request):
        params = _page(InstanceQuerySerializer, request)
        items, count = selectors.paginate(
            selectors.workflow_instance_list(filters=params), offset=params["offset"], limit=params["limit"]
        )
        return Response(
            {
                "items": InstanceSerializer(items, many=True).data,
                "count": count,
                "offset": params["offset"],
                "limit": params["limit"],
            }
        )


class InstanceDetailApi(PerMethodPermissionApi):
    """GET workflow-instances/{id} (read; secret variables masked), DELETE (delete; only ended instances)."""

    permission_classes = [READ_INSTANCES]
    method_permissions = {"DELETE": DELETE_INSTANCES}

    @extend_schema(responses=InstanceDetailSerializer)
    def get(self, request, instance_id):
        return Response(InstanceDetailSerializer(selectors.workflow_instance_get(instance_id=instance_id)).data)

    @extend_schema(responses={204: None})
    def delete(self, request, instance_id):
        instance = selectors.workflow_instance_get(instance_id=instance_id)
        services.workflow_instance_delete(instance=instance, actor=actor_from_request(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class InstanceCancelApi(APIView):
    """POST workflow-instances/{id}/cancel: cancel a running or suspended instance (409 otherwise)."""

    permission_classes = [CANCEL_INSTANCES]

    @extend_schema(request=None, responses=InstanceDetailSerializer)
    def post(self, request, instance_id):
        instance = selectors.workflow_instance_get(instance_id=instance_id)
        instance = services.workflow_instance_cancel(instance=instance, actor=actor_from_request(request))
        return Response(InstanceDetailSerializer(instance).data)


class ActivityExecutionListApi(APIView):
    """GET workflow-instances/{id}/activity-executions: the instance's activity runs, oldest first."""

    permission_classes = [READ_EXECUTIONS]

    @extend_schema(parameters=[PageQuerySerializer], responses=ActivityExecutionSerializer(many=True))
    def get(self, request, instance_id):
        params = _page(PageQuerySerializer, request)
        instance = selectors.workflow_instance_get(instance_id=instance_id)
        items, count = selectors.paginate(
            selectors.activity_execution_list(instance=instance), offset=params["offset"], limit=params["limit"]
        )
        return Response(
            {
                "items": ActivityExecutionSerializer(items, many=True).data,
                "count": count,
                "offset": params["offset"],
                "limit": params["limit"],
            }
        )
