"""Admin for executors: credentials write-only (masked), the internal flag, and a test-connection action."""

from django import forms
from django.contrib import admin, messages

from audit.actors import actor_from_request
from audit.admin import AuditedModelAdmin
from elsa_site.errors import DomainError
from workflows.executors.credentials import MASK, SCHEMAS, CredentialsUnreadable, executor_secrets, mask
from workflows.executors.models import AuthType, Executor
from workflows.executors.services import clean_executor_data, executor_test_connection


class ExecutorAdminForm(forms.ModelForm):
    """Edits the API shape; validation is the service's, so the admin cannot store what the API refuses."""

    endpoints = forms.JSONField(required=False, help_text='[{"name", "path", "method", "timeout"}]')
    auth_type = forms.ChoiceField(choices=AuthType.choices)
    auth_config = forms.JSONField(required=False, label="Authentication settings (non-secret)")
    credentials = forms.JSONField(
        required=False,
        label="Credentials (write-only)",
        help_text='Secret fields, e.g. {"key": "..."}. Shown masked; leave a masked value as is to keep it.',
    )
    tls_client_key = forms.CharField(
        required=False,
        label="TLS client key (write-only)",
        widget=forms.PasswordInput(render_value=False),
        help_text="PEM private key. Leave blank to keep the stored key.",
    )
    clear_tls_client_key = forms.BooleanField(required=False, label="Remove the stored client key")

    class Meta:
        model = Executor
        fields = [
            "name",
            "description",
            "base_url",
            "endpoints",
            "auth_type",
            "auth_config",
            "tls_client_certificate",
            "tls_ca_bundle",
            "enabled",
            "internal",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            # Masked values only: the page never carries a stored secret to the browser.
            try:
                self.initial["credentials"] = {k: mask(v) for k, v in executor_secrets(self.instance).items()}
            except CredentialsUnreadable as exc:
                # A removed key: the page still opens so the operator can enter them again; a masked
                # value then keeps nothing, so saving needs the secrets re-entered.
                self.initial["credentials"] = {name: MASK for name in SCHEMAS[self.instance.auth_type].secret}
                self.fields["credentials"].help_text = str(exc)
            if self.instance.tls_client_key_encrypted:
                self.fields["tls_client_key"].help_text = "A key is stored (****). Leave blank to keep it."

    def clean(self):
        data = super().clean()
        current = self.instance if self.instance.pk else None
        tls = {
            "client_certificate": data.get("tls_client_certificate", ""),
            "ca_bundle": data.get("tls_ca_bundle", ""),
        }
        if data.get("clear_tls_client_key"):
            tls["client_key"] = ""
        elif data.get("tls_client_key"):
            tls["client_key"] = data["tls_client_key"]
        config = {**(data.get("auth_config") or {}), **(data.get("credentials") or {})}
        try:
            self.cleaned_values = clean_executor_data(
                {
                    "name": data.get("name"),
                    "description": data.get("description", ""),
                    "base_url": data.get("base_url"),
                    "endpoints": data.get("endpoints") or [],
                    "authentication": {"type": data.get("auth_type"), "config": config},
                    "tls": tls,
                    "enabled": bool(data.get("enabled")),
                },
                current,
            )
        except DomainError as exc:
            raise forms.ValidationError(exc.message) from exc
        return data

    def save(self, commit=True):
        executor = super().save(commit=False)
        for name, value in self.cleaned_values.items():
            setattr(executor, name, value)
        if commit:
            executor.save()
        return executor


@admin.register(Executor)
class ExecutorAdmin(AuditedModelAdmin):
    audit_resource_type = "executor"
    form = ExecutorAdminForm
    list_display = ("name", "base_url", "auth_type", "enabled", "internal", "updated_at")
    list_filter = ("enabled", "internal", "auth_type")
    search_fields = ("name", "base_url")
    actions = ["test_connection"]
    fieldsets = (
        (None, {"fields": ("name", "description", "base_url", "endpoints", "enabled")}),
        ("Authentication", {"fields": ("auth_type", "auth_config", "credentials")}),
        ("TLS", {"fields": ("tls_client_certificate", "tls_client_key", "clear_tls_client_key", "tls_ca_bundle")}),
        (
            "Network",
            {"fields": ("internal",), "description": "Internal executors may call private addresses (no SSRF guard)."},
        ),
    )

    @admin.action(description="Test connection", permissions=["change"])
    def test_connection(self, request, queryset):
        for executor in queryset:
            result = executor_test_connection(executor=executor, actor=actor_from_request(request))
            level = messages.SUCCESS if result["ok"] else messages.ERROR
            detail = f"HTTP {result['status']}" if result["ok"] else result["error"]
            self.message_user(request, f"{executor.name}: {detail} ({result['duration_ms']} ms)", level)

    def get_changeform_initial_data(self, request):
        return {"endpoints": [], "auth_type": AuthType.NONE}
