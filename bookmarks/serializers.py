"""Serializers of the bookmarks API: bookmarks and token ids out (never a token), token requests in."""

from django.conf import settings
from rest_framework import serializers

from bookmarks.models import Bookmark, ResumeToken


class ResumeTokenOut(serializers.ModelSerializer):
    """An issued token by id and fingerprint; the token itself is never stored, so never shown."""

    revoked = serializers.BooleanField(source="is_revoked")

    class Meta:
        model = ResumeToken
        fields = ["id", "fingerprint", "created_at", "expires_at", "revoked", "revoked_at"]


class BookmarkOut(serializers.ModelSerializer):
    instance_id = serializers.UUIDField()
    # Plain strings in the schema: an enum here would collide with the instances' "status" enum.
    status = serializers.CharField(help_text="active, consumed, revoked, expired or invalidated")
    on_expiry = serializers.CharField(help_text="fault or timeout")
    soft_blocked = serializers.BooleanField()
    tokens = ResumeTokenOut(many=True)

    class Meta:
        model = Bookmark
        fields = [
            "id",
            "instance_id",
            "activity_id",
            "status",
            "created_at",
            "expires_at",
            "auto_burn",
            "on_expiry",
            "input_schema",
            "consumed_at",
            "revoked_at",
            "expired_at",
            "invalidated_at",
            "resume_count",
            "last_resumed_at",
            "failure_count",
            "soft_blocked",
            "soft_blocked_at",
            "tokens",
        ]


class BookmarkListOut(serializers.Serializer):
    items = BookmarkOut(many=True)


class TokenIssueIn(serializers.Serializer):
    ttl_seconds = serializers.IntegerField(required=False, min_value=1)
    expires_at = serializers.DateTimeField(required=False)

    def validate_ttl_seconds(self, value):
        # The setting is read when used (tests override it), so not a max_value fixed at import.
        if value > settings.ELSA_BOOKMARK_MAX_TTL_SECONDS:
            raise serializers.ValidationError(
                f"Ensure this value is less than or equal to {settings.ELSA_BOOKMARK_MAX_TTL_SECONDS}."
            )
        return value

    def validate(self, attrs):
        if "ttl_seconds" in attrs and "expires_at" in attrs:
            raise serializers.ValidationError("Give ttl_seconds or expires_at, not both.")
        return attrs


class TokenIssueOut(serializers.Serializer):
    url = serializers.CharField()
    approve_url = serializers.CharField()
    token = serializers.CharField()
    token_id = serializers.UUIDField(source="record.id")
    expires_at = serializers.DateTimeField()


class RevokeIn(serializers.Serializer):
    # With token_id only that token is denied (until it expires); without, the whole bookmark.
    token_id = serializers.UUIDField(required=False)


class ResumeIn(serializers.Serializer):
    """Documentation of the POST body; the view parses it itself, after the token checks."""

    input = serializers.JSONField(required=False)


class ResumeOut(serializers.Serializer):
    instance_id = serializers.UUIDField()
    status = serializers.CharField()
