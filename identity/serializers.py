"""Input and output serializers of the identity API; secrets are never part of an output model."""

from rest_framework import serializers

from identity.models import Application, Role, User


class LoginInput(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=1024, trim_whitespace=False)


class RefreshInput(serializers.Serializer):
    refresh_token = serializers.CharField(max_length=4096)


class TokenPairOutput(serializers.Serializer):
    access_token = serializers.CharField()
    refresh_token = serializers.CharField()
    token_type = serializers.CharField()
    expires_in = serializers.IntegerField()


class ClientTokenOutput(serializers.Serializer):
    access_token = serializers.CharField()
    token_type = serializers.CharField()
    expires_in = serializers.IntegerField()


class MeOutput(serializers.Serializer):
    type = serializers.CharField()
    id = serializers.CharField()
    name = serializers.CharField()
    permissions = serializers.ListField(child=serializers.CharField())


class RoleOutput(serializers.ModelSerializer):
    class Meta:
        model = Role
        fields = ["id", "name", "description", "permissions", "created_at"]


class RoleInput(serializers.Serializer):
    name = serializers.RegexField(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    description = serializers.CharField(max_length=255, required=False, allow_blank=True)
    permissions = serializers.ListField(child=serializers.CharField(max_length=100), max_length=500)


class RoleNamesField(serializers.ListField):
    child = serializers.CharField(max_length=100)


class UserOutput(serializers.ModelSerializer):
    roles = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")

    class Meta:
        model = User
        fields = [
            "id",
            "username",
            "email",
            "first_name",
            "last_name",
            "is_active",
            "roles",
            "date_joined",
            "last_login",
        ]


class UserCreateInput(serializers.Serializer):
    username = serializers.RegexField(r"^[\w.@+-]{1,150}$")
    password = serializers.CharField(max_length=1024, trim_whitespace=False, write_only=True)
    email = serializers.EmailField(required=False, allow_blank=True, default="")
    roles = RoleNamesField(required=False, default=list)


class UserUpdateInput(serializers.Serializer):
    password = serializers.CharField(max_length=1024, trim_whitespace=False, write_only=True, required=False)
    email = serializers.EmailField(required=False, allow_blank=True)
    first_name = serializers.CharField(max_length=150, required=False, allow_blank=True)
    last_name = serializers.CharField(max_length=150, required=False, allow_blank=True)
    is_active = serializers.BooleanField(required=False)
    roles = RoleNamesField(required=False)


class ApplicationOutput(serializers.ModelSerializer):
    roles = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")

    class Meta:
        model = Application
        fields = ["id", "name", "client_id", "roles", "enabled", "expires_at", "last_used_at", "created_at"]


class ApplicationCreatedOutput(ApplicationOutput):
    """The only output that carries the secrets: once, in the creation response."""

    client_secret = serializers.CharField()
    api_key = serializers.CharField()

    class Meta(ApplicationOutput.Meta):
        fields = [*ApplicationOutput.Meta.fields, "client_secret", "api_key"]


class ApplicationCreateInput(serializers.Serializer):
    name = serializers.CharField(max_length=150)
    roles = RoleNamesField(required=False, default=list)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)


class ApplicationUpdateInput(serializers.Serializer):
    name = serializers.CharField(max_length=150, required=False)
    roles = RoleNamesField(required=False)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class ApplicationRotateInput(serializers.Serializer):
    old_key_valid_until = serializers.DateTimeField(required=False, allow_null=True, default=None)
    grace_seconds = serializers.IntegerField(required=False, min_value=0, max_value=30 * 86400, default=None)
    rotate_client_secret = serializers.BooleanField(required=False, default=False)


class ApplicationRotatedOutput(serializers.Serializer):
    api_key = serializers.CharField()
    client_secret = serializers.CharField(allow_null=True)
    old_key_valid_until = serializers.DateTimeField(allow_null=True)
