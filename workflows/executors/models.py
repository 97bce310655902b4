"""Data of the executors app: executor configurations and database-kept circuit breaker state."""

import uuid

from django.db import models


class AuthType(models.TextChoices):
    NONE = "none", "None"
    API_KEY = "api_key", "API key"
    BEARER = "bearer", "Bearer token"
    BASIC = "basic", "HTTP basic"
    OIDC_CLIENT_CREDENTIALS = "oidc_client_credentials", "OIDC client credentials"
    OIDC_USER = "oidc_user", "OIDC user (refresh token / password)"


class Executor(models.Model):
    """A partner service workflows call: base URL, named endpoints, credentials and TLS material."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True, default="")
    base_url = models.CharField(max_length=2048)
    # [{"name", "path", "method", "timeout"}]
    endpoints = models.JSONField(default=list, blank=True)
    auth_type = models.CharField(max_length=32, choices=AuthType.choices, default=AuthType.NONE)
    # The non-secret part of the authentication settings (header names, issuer, client id, scopes).
    auth_config = models.JSONField(default=dict, blank=True)
    # The secret part ({field: value} as JSON), a Fernet token under ELSA_ENCRYPTION_KEYS; never decrypted
    # outside the outbound call path.
    auth_secrets_encrypted = models.TextField(blank=True, default="")
    tls_client_certificate = models.TextField(blank=True, default="")
    # The client certificate's private key, encrypted like auth secrets.
    tls_client_key_encrypted = models.TextField(blank=True, default="")
    tls_ca_bundle = models.TextField(blank=True, default="")
    enabled = models.BooleanField(default=True)
    # Admin-only: allows private, loopback and link-local targets (an internal service), which the
    # SSRF guard otherwise refuses.
    internal = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def endpoint(self, name: str) -> dict | None:
        return next((e for e in self.endpoints if e.get("name") == name), None)


class BreakerState(models.Model):
    """Circuit breaker state kept in the database when the cache is not shared between processes."""

    key = models.CharField(max_length=200, primary_key=True)
    state = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.key
