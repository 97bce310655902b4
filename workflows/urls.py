"""URLs of the workflows app (mounted under /elsa/api/)."""

from django.urls import path

from workflows import api

urlpatterns = [
    path("workflow-definitions", api.DefinitionListApi.as_view(), name="workflow-definition-list"),
    path(
        "workflow-definitions/<uuid:definition_id>",
        api.DefinitionDetailApi.as_view(),
        name="workflow-definition-detail",
    ),
    path(
        "workflow-definitions/<uuid:definition_id>/publish",
        api.DefinitionPublishApi.as_view(),
        name="workflow-definition-publish",
    ),
    path(
        "workflow-definitions/<uuid:definition_id>/retract",
        api.DefinitionRetractApi.as_view(),
        name="workflow-definition-retract",
    ),
    path(
        "workflow-definitions/<uuid:definition_id>/execute",
        api.DefinitionExecuteApi.as_view(),
        name="workflow-definition-execute",
    ),
    path("workflow-instances", api.InstanceListApi.as_view(), name="workflow-instance-list"),
    path("workflow-instances/<uuid:instance_id>", api.InstanceDetailApi.as_view(), name="workflow-instance-detail"),
    path(
        "workflow-instances/<uuid:instance_id>/cancel", api.InstanceCancelApi.as_view(), name="workflow-instance-cancel"
    ),
    path(
        "workflow-instances/<uuid:instance_id>/activity-executions",
        api.ActivityExecutionListApi.as_view(),
        name="workflow-instance-activity-executions",
    ),
]
