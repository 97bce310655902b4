"""Identity data: users, roles, applications and their API keys."""

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone


class Role(models.Model):
    """A named set of permission strings ("read:workflow-instances", "*" for all)."""

    name = models.CharField(max_length=100, unique=True)
    description = models.CharField(max_length=255, blank=True, default="")
    permissions = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


def permissions_of_roles(roles) -> frozenset[str]:
    """The union of the permission strings of `roles`."""
    return frozenset(p for role in roles for p in (role.permissions or []))


class User(AbstractUser):
    """A person who signs in to the API or the admin."""

    roles = models.ManyToManyField(Role, blank=True, related_name="users")

    # The principal interface shared with API-key and token principals (see identity.principals).
    actor_type = "user"

    @property
    def actor_id(self) -> str:
        return str(self.pk)

    @property
    def actor_name(self) -> str:
        return self.username

    @property
    def permissions(self) -> frozenset[str]:
        cached = getattr(self, "_elsa_permissions", None)
        if cached is None:
            cached = permissions_of_roles(self.roles.all()) if self.pk else frozenset()
            # A Django superuser administers everything, in the API as in the admin.
            if self.is_superuser:
                cached = cached | {"*"}
            self._elsa_permissions = cached
        return cached

    def has_permission(self, permission: str) -> bool:
        return self.is_active and ("*" in self.permissions or permission in self.permissions)


class Application(models.Model):
    """A machine client: client credentials for tokens, API keys for direct calls."""

    name = models.CharField(max_length=150, unique=True)
    client_id = models.CharField(max_length=64, unique=True)
    # A Django password hash (Argon2 in production): client secrets are checked rarely, at token time.
    client_secret_hash = models.CharField(max_length=255)
    roles = models.ManyToManyField(Role, blank=True, related_name="applications")
    enabled = models.BooleanField(default=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        return self.enabled and (self.expires_at is None or self.expires_at > now)


class ApiKey(models.Model):
    """One API key of an application, stored as HMAC-SHA256(pepper, salt + secret)."""

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="api_keys")
    # The public part embedded in the key (elsa_<key_id>_<secret>): lookup is one indexed query.
    key_id = models.CharField(max_length=32, unique=True)
    salt = models.CharField(max_length=64)
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Set when the key is rotated with a grace period: the old key works until then.
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.application.name}:{self.key_id}"
