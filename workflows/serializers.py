"""Serializers of the workflows API: inputs, queries and outputs (secret variables always masked)."""

from rest_framework import serializers

from workflows.models import ActivityExecution, InstanceStatus, WorkflowDefinition, WorkflowInstance


class PageQuerySerializer(serializers.Serializer):
    offset = serializers.IntegerField(min_value=0, default=0)
    limit = serializers.IntegerField(min_value=1, max_value=200, default=50)


class DefinitionQuerySerializer(PageQuerySerializer):
    name = serializers.CharField(required=False, max_length=200)
    published = serializers.BooleanField(required=False, allow_null=True, default=None)


class InstanceQuerySerializer(PageQuerySerializer):
    status = serializers.ChoiceField(choices=InstanceStatus.choices, required=False)
    definition = serializers.UUIDField(required=False)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)


class VersionQuerySerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1, required=False)


class PublishSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1, required=False)


class ExecuteSerializer(serializers.Serializer):
    input = serializers.JSONField(required=False, default=dict)


class DefinitionSerializer(serializers.ModelSerializer):
    published_version = serializers.SerializerMethodField()
    status = serializers.SerializerMethodField()

    class Meta:
        model = WorkflowDefinition
        fields = ["id", "name", "status", "latest_version", "published_version", "created_at", "updated_at"]

    def get_published_version(self, obj) -> int | None:
        return obj.published_version.version if obj.published_version_id else None

    def get_status(self, obj) -> str:
        return "Published" if obj.published_version_id else "Draft"


class DefinitionDetailSerializer(DefinitionSerializer):
    versions = serializers.SerializerMethodField()
    version = serializers.SerializerMethodField()
    document = serializers.SerializerMethodField()

    class Meta(DefinitionSerializer.Meta):
        fields = [*DefinitionSerializer.Meta.fields, "version", "document", "versions"]

    def get_versions(self, obj) -> list[dict]:
        return [
            {"version": v.version, "status": v.status, "created_at": v.created_at, "published_at": v.published_at}
            for v in obj.versions.order_by("version")
        ]

    def _shown(self, obj):
        return self.context["version"]

    def get_version(self, obj) -> int:
        return self._shown(obj).version

    def get_document(self, obj) -> dict:
        return self._shown(obj).document


class ExecuteResultSerializer(serializers.Serializer):
    instance_id = serializers.UUIDField(source="pk")
    status = serializers.CharField()


class InstanceSerializer(serializers.ModelSerializer):
    definition_version = serializers.IntegerField(source="definition_version.version")

    class Meta:
        model = WorkflowInstance
        fields = [
            "id",
            "definition",
            "definition_version",
            "status",
            "created_at",
            "updated_at",
            "finished_at",
            "step_count",
        ]


class InstanceDetailSerializer(InstanceSerializer):
    variables = serializers.SerializerMethodField()
    waiting = serializers.SerializerMethodField()
    fault = serializers.SerializerMethodField()

    class Meta(InstanceSerializer.Meta):
        fields = [*InstanceSerializer.Meta.fields, "input", "variables", "outputs", "waiting", "fault"]

    def get_variables(self, obj) -> dict:
        # Secret variables are never decrypted outside workers: their names show with "****".
        return obj.masked_variables()

    def get_waiting(self, obj) -> list[dict]:
        return [
            {"activity_id": activity_id, "since": entry.get("since"), "resume_at": entry.get("resume_at")}
            for activity_id, entry in (obj.state or {}).get("waiting", {}).items()
        ]

    def get_fault(self, obj) -> dict | None:
        if not obj.fault_message:
            return None
        return {"activity_id": obj.fault_activity_id, "message": obj.fault_message}


class ActivityExecutionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ActivityExecution
        fields = ["id", *ActivityExecution.RECORD_FIELDS]
