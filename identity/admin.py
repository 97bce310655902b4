"""Admin for roles, users and applications; application secrets are shown once, on creation or rotation."""

import secrets

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.template.response import TemplateResponse
from django.urls import reverse
from rest_framework_simplejwt.token_blacklist.admin import BlacklistedTokenAdmin, OutstandingTokenAdmin
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from audit.actors import actor_from_request
from audit.admin import AuditedModelAdmin
from identity import config_file, invalidation, services, tokens
from identity.models import ApiKey, Application, Role, User, permissions_of_roles
from identity.permissions import known_permissions

BUILTIN_ROLE = "admin"


def _refuse_file_name(kind: str, name: str) -> None:
    """A user or application name the identity file defines is refused here, as in the API.

    Login looks in the database first, so a database user of a file user's name would silently take
    over that name (and the audit log would show two principals by one name); the next start would
    then fail identity.E001. Refusing the name here keeps each identity in exactly one place.
    """
    try:
        defined = config_file.file_defines(kind, name)
    except config_file.IdentityFileError as exc:
        raise forms.ValidationError(
            "ELSA_IDENTITY_FILE cannot be read, so this name cannot be checked against it; fix the file first."
        ) from exc
    if defined:
        raise forms.ValidationError(
            f"A {kind} named {name!r} is defined in ELSA_IDENTITY_FILE; choose another name.", code="file_identity"
        )


def _holds(request, permissions) -> bool:
    """Whether the admin user holds `*` or every one of `permissions` (superusers hold `*`)."""
    return services.caller_holds(frozenset(request.user.permissions), permissions)


class HeldPermissionsAdmin(AuditedModelAdmin):
    """Staff without `*` change, delete and grant only what they hold, as callers of the API do.

    Stricter than the API (which lets a caller disable a principal it could not take over), to stay
    simple: an object holding a permission the staff user lacks is read-only to it.
    """

    def object_permissions(self, obj) -> frozenset[str]:
        raise NotImplementedError

    def has_change_permission(self, request, obj=None):
        if obj is not None and not _holds(request, self.object_permissions(obj)):
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        if obj is not None and not _holds(request, self.object_permissions(obj)):
            return False
        return super().has_delete_permission(request, obj)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "roles" and "*" not in request.user.permissions:
            grantable = [role.pk for role in Role.objects.all() if _holds(request, role.permissions)]
            kwargs["queryset"] = Role.objects.filter(pk__in=grantable)
        return super().formfield_for_manytomany(db_field, request, **kwargs)


class RoleAdminForm(forms.ModelForm):
    permissions = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple)
    # The permissions the editing staff user holds, unless it holds `*` (see RoleAdmin.get_form).
    grantable: frozenset[str] | None = None

    class Meta:
        model = Role
        fields = ["name", "description", "permissions"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Built per form: the registry grows as apps declare HasPermission(...) strings.
        current = list(self.instance.permissions or []) if self.instance.pk else []
        choices = sorted(set(known_permissions()) | set(current))
        if self.grantable is not None:
            choices = [p for p in choices if p in self.grantable]
        self.fields["permissions"].choices = [(p, p) for p in choices]
        self.initial.setdefault("permissions", current)

    def clean_permissions(self):
        return sorted(set(self.cleaned_data["permissions"]))


@admin.register(Role)
class RoleAdmin(HeldPermissionsAdmin):
    audit_resource_type = "role"
    form = RoleAdminForm
    list_display = ("name", "description", "created_at")
    search_fields = ("name",)

    def object_permissions(self, obj) -> frozenset[str]:
        return frozenset(obj.permissions or [])

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        held = request.user.permissions
        return form if "*" in held else type(form.__name__, (form,), {"grantable": frozenset(held)})

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        invalidation.publish("roles")

    def has_delete_permission(self, request, obj=None):
        # As in services.role_delete: every principal relying on the built-in role would lose `*`.
        if obj is not None and obj.name == BUILTIN_ROLE:
            return False
        return super().has_delete_permission(request, obj)

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        invalidation.publish("roles")

    def delete_queryset(self, request, queryset):
        if queryset.filter(name=BUILTIN_ROLE).exists():
            raise PermissionDenied
        super().delete_queryset(request, queryset)
        invalidation.publish("roles")


class UserAdminCreationForm(AdminUserCreationForm):
    def clean_username(self):
        username = super().clean_username()
        _refuse_file_name("user", username)
        return username


class UserAdminChangeForm(UserChangeForm):
    def clean_username(self):
        username = self.cleaned_data["username"]
        if "username" in self.changed_data:
            _refuse_file_name("user", username)
        return username


@admin.register(User)
class UserAdmin(DjangoUserAdmin, HeldPermissionsAdmin):
    audit_resource_type = "user"
    form = UserAdminChangeForm
    add_form = UserAdminCreationForm
    fieldsets = (*DjangoUserAdmin.fieldsets, ("Elsa roles", {"fields": ("roles",)}))
    filter_horizontal = (*DjangoUserAdmin.filter_horizontal, "roles")

    def object_permissions(self, obj) -> frozenset[str]:
        return obj.permissions

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        # Superuser status and Django permissions are beyond any role: only a superuser grants them.
        if not request.user.is_superuser:
            fields = (*fields, "is_superuser", "groups", "user_permissions")
        return fields

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # Disabling a user here refuses its access tokens in every process within a second.
        invalidation.publish(f"user:{obj.pk}")

    def user_change_password(self, request, id, form_url=""):
        # Django's password view saves the form without save_model or save_related: audit it through
        # log_change, which it calls only after a successful change, in one transaction with it.
        request._elsa_password_view = True
        with transaction.atomic():
            return super().user_change_password(request, id, form_url)

    def log_change(self, request, obj, message):
        if getattr(request, "_elsa_password_view", False):
            self._audit(request, obj, action="updated", fields=["password"])
            tokens.user_refresh_tokens_revoke(obj.pk)
        return super().log_change(request, obj, message)

    def delete_model(self, request, obj):
        pk = obj.pk
        super().delete_model(request, obj)
        invalidation.publish(f"user:{pk}")

    def delete_queryset(self, request, queryset):
        pks = list(queryset.values_list("pk", flat=True))
        super().delete_queryset(request, queryset)
        invalidation.publish(*(f"user:{pk}" for pk in pks))


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    can_delete = False
    # The hash and salt stay out of the page: nothing about a key but its public id is shown.
    fields = ("key_id", "created_at", "expires_at", "revoked_at", "last_used_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


class ApplicationAdminForm(forms.ModelForm):
    class Meta:
        model = Application
        fields = ["name", "roles", "enabled", "expires_at"]

    def clean_name(self):
        name = self.cleaned_data["name"]
        if self.instance.pk is None or "name" in self.changed_data:
            _refuse_file_name("application", name)
        return name


def _secrets_page(request, application, *, client_secret, api_key, continue_url):
    response = TemplateResponse(
        request,
        "identity/application_secrets.html",
        {
            "application": application,
            "client_secret": client_secret,
            "api_key": api_key,
            "continue_url": continue_url,
            "title": "Application credentials",
            "site_header": admin.site.site_header,
        },
    )
    # Never cached by the browser or a proxy: this page is the only copy of the secrets.
    response["Cache-Control"] = "no-store"
    return response


@admin.register(Application)
class ApplicationAdmin(HeldPermissionsAdmin):
    audit_resource_type = "application"
    form = ApplicationAdminForm
    list_display = ("name", "client_id", "enabled", "expires_at", "last_used_at")
    list_filter = ("enabled",)
    search_fields = ("name", "client_id")
    readonly_fields = ("client_id", "last_used_at", "created_at")
    filter_horizontal = ("roles",)
    inlines = [ApiKeyInline]
    actions = ["rotate_credentials", "disable_applications"]

    def object_permissions(self, obj) -> frozenset[str]:
        return permissions_of_roles(obj.roles.all())

    def save_model(self, request, obj, form, change):
        if not change:
            # The plaintexts live on the request only long enough to render the add response.
            client_secret = secrets.token_urlsafe(32)
            obj.client_id = f"app_{secrets.token_hex(12)}"
            obj.client_secret_hash = make_password(client_secret)
            super().save_model(request, obj, form, change)
            request._elsa_new_credentials = (client_secret, services._new_api_key(obj))
            return
        super().save_model(request, obj, form, change)
        invalidation.publish(f"application:{obj.pk}")

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        invalidation.publish(f"application:{form.instance.pk}")

    def response_add(self, request, obj, post_url_continue=None):
        credentials = getattr(request, "_elsa_new_credentials", None)
        if credentials is None:
            return super().response_add(request, obj, post_url_continue)
        client_secret, api_key = credentials
        return _secrets_page(
            request,
            obj,
            client_secret=client_secret,
            api_key=api_key,
            continue_url=reverse("admin:identity_application_change", args=[obj.pk]),
        )

    def delete_model(self, request, obj):
        pk = obj.pk
        super().delete_model(request, obj)
        invalidation.publish(f"application:{pk}")

    def delete_queryset(self, request, queryset):
        pks = list(queryset.values_list("pk", flat=True))
        super().delete_queryset(request, queryset)
        invalidation.publish(*(f"application:{pk}" for pk in pks))

    @admin.action(description="Rotate API key and client secret (old key stops now)")
    def rotate_credentials(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Rotate one application at a time.", level=messages.ERROR)
            return None
        try:
            application, api_key, client_secret = services.application_rotate(
                application=queryset.get(),
                rotate_client_secret=True,
                actor=actor_from_request(request),
                caller_permissions=request.user.permissions,
            )
        except services.ExceedsOwnPermissions as exc:
            self.message_user(request, exc.message, level=messages.ERROR)
            return None
        return _secrets_page(
            request,
            application,
            client_secret=client_secret,
            api_key=api_key,
            continue_url=reverse("admin:identity_application_changelist"),
        )

    @admin.action(description="Disable selected applications")
    def disable_applications(self, request, queryset):
        actor = actor_from_request(request)
        try:
            with transaction.atomic():  # all of them or none
                for application in queryset:
                    services.application_set_enabled(
                        application=application, enabled=False, actor=actor, caller_permissions=request.user.permissions
                    )
        except services.ExceedsOwnPermissions as exc:
            self.message_user(request, exc.message, level=messages.ERROR)
            return
        self.message_user(request, f"Disabled {queryset.count()} application(s).")


# Django's groups are not our permission model (roles are): keep them out of the admin entirely.
admin.site.unregister(Group)

# simplejwt registers its token tables; re-register them audited, so revoking a token by hand in the
# admin leaves a config.changed event like every other admin change.
for _model, _base in ((OutstandingToken, OutstandingTokenAdmin), (BlacklistedToken, BlacklistedTokenAdmin)):
    admin.site.unregister(_model)
    admin.site.register(
        _model, type(f"Audited{_base.__name__}", (AuditedModelAdmin, _base), {"audit_resource_type": "jwt-token"})
    )
