"""URLs of the executors API, mounted under /elsa/api/."""

from django.urls import path

from workflows.executors import api

urlpatterns = [
    path("executors", api.ExecutorListApi.as_view(), name="executor-list"),
    path("executors/<uuid:executor_id>", api.ExecutorDetailApi.as_view(), name="executor-detail"),
    path("executors/<uuid:executor_id>/test", api.ExecutorTestConnectionApi.as_view(), name="executor-test"),
]
