"""API shapes of executors: input as submitted (the service validates), output with credentials masked."""

from rest_framework import serializers

from workflows.executors.credentials import masked_authentication, masked_tls
from workflows.executors.models import Executor


class ExecutorInputSerializer(serializers.Serializer):
    """What POST and PATCH accept; `internal` is not here: only an administrator sets it, in the admin."""

    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    base_url = serializers.CharField(max_length=2048)
    endpoints = serializers.ListField(child=serializers.DictField(), required=False)
    authentication = serializers.DictField(required=False)
    tls = serializers.DictField(required=False)
    enabled = serializers.BooleanField(required=False)


class ExecutorOutputSerializer(serializers.ModelSerializer):
    authentication = serializers.SerializerMethodField()
    tls = serializers.SerializerMethodField()

    class Meta:
        model = Executor
        fields = [
            "id",
            "name",
            "description",
            "base_url",
            "endpoints",
            "authentication",
            "tls",
            "enabled",
            "internal",
            "created_at",
            "updated_at",
        ]

    def get_authentication(self, executor) -> dict:
        return masked_authentication(executor)

    def get_tls(self, executor) -> dict:
        return masked_tls(executor)


class TestConnectionOutputSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    status = serializers.IntegerField(allow_null=True)
    duration_ms = serializers.IntegerField()
    error = serializers.CharField(allow_blank=True)
