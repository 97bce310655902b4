"""Serializers of the audit app: the event shape of the API and of exports."""

from rest_framework import serializers

from audit.chain import canonical_timestamp
from audit.models import AuditEvent


class AuditEventSerializer(serializers.ModelSerializer):
    """One event as the API returns it, with its chain hashes so clients can check links."""

    actor = serializers.SerializerMethodField()
    resource = serializers.SerializerMethodField()

    class Meta:
        model = AuditEvent
        fields = (
            "id",
            "event_id",
            "timestamp",
            "event_type",
            "action",
            "result",
            "resource",
            "actor",
            "context",
            "metadata",
            "previous_hash",
            "hash",
        )
        read_only_fields = fields

    def get_actor(self, event: AuditEvent) -> dict:
        return {"type": event.actor_type, "id": event.actor_id, "name": event.actor_name, "ip": event.actor_ip}

    def get_resource(self, event: AuditEvent) -> dict | None:
        if not event.resource_type and not event.resource_id:
            return None
        return {"type": event.resource_type, "id": event.resource_id}

    def to_representation(self, instance):
        data = super().to_representation(instance)
        # The exact string the hash covers, so a client can recompute it.
        data["timestamp"] = canonical_timestamp(instance.timestamp)
        return data


class AuditEventPageSerializer(serializers.Serializer):
    items = AuditEventSerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True)


class AuditEventQuerySerializer(serializers.Serializer):
    """Query parameters of the search endpoint."""

    event_type = serializers.CharField(required=False)
    action = serializers.CharField(required=False)
    result = serializers.ChoiceField(choices=AuditEvent.Result.choices, required=False)
    resource_type = serializers.CharField(required=False)
    resource_id = serializers.CharField(required=False)
    actor_id = serializers.CharField(required=False)
    date_from = serializers.CharField(required=False)
    date_to = serializers.CharField(required=False)
    cursor = serializers.CharField(required=False)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=100, default=50)
    order = serializers.ChoiceField(choices=["asc", "desc"], required=False, default="asc")


class CheckpointSerializer(serializers.Serializer):
    event_id = serializers.IntegerField()
    created = serializers.DateTimeField()


class VerificationSerializer(serializers.Serializer):
    is_valid = serializers.BooleanField()
    first_invalid_id = serializers.IntegerField(allow_null=True)
    total_checked = serializers.IntegerField()
    reason = serializers.CharField(allow_blank=True)
    # Whether the newest validly signed checkpoint is recent enough (ELSA_AUDIT_CHECKPOINT_MAX_AGE_SECONDS).
    is_fresh = serializers.BooleanField()
    newest_checkpoint = CheckpointSerializer(allow_null=True)
    freshness_reason = serializers.CharField(allow_blank=True)
