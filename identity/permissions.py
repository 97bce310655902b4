"""DRF permission classes: HasPermission("read:x") and the registry of known permission strings."""

import re
import threading

from rest_framework.permissions import BasePermission

# Permission strings of CONTRACT.md; HasPermission(...) adds every string it is created with.
STATIC_PERMISSIONS = (
    "*",
    "read:user",
    "create:user",
    "update:user",
    "delete:user",
    "read:role",
    "create:role",
    "update:role",
    "delete:role",
    "read:application",
    "create:application",
    "update:application",
    "delete:application",
    "read:workflow-definitions",
    "write:workflow-definitions",
    "delete:workflow-definitions",
    "publish:workflow-definitions",
    "retract:workflow-definitions",
    "exec:workflow-definitions",
    "read:workflow-instances",
    "cancel:workflow-instances",
    "delete:workflow-instances",
    "read:activity-execution",
    "read:bookmarks",
    "issue:bookmark-tokens",
    "revoke:bookmarks",
    "read:executors",
    "write:executors",
    "delete:executors",
    "read:audit-events",
    "read:metrics",
)

_PERMISSION_FORMAT = re.compile(r"^[a-z][a-z0-9-]*:[a-z0-9][a-z0-9-]*$")
_registry: set[str] = set(STATIC_PERMISSIONS)
_classes: dict[str, type[BasePermission]] = {}
_lock = threading.Lock()


def known_permissions() -> list[str]:
    """Every permission string the code checks, for the admin's role picker."""
    return sorted(_registry)


def principal_of(request):
    """The authenticated principal of a request, or None."""
    principal = getattr(request, "user", None)
    if principal is None or not getattr(principal, "is_authenticated", False):
        return None
    return principal


class RequiresPermission(BasePermission):
    """Allows an authenticated principal holding `required_permission` (or `*`)."""

    required_permission = ""
    message = "You do not have permission to perform this action."

    def has_permission(self, request, view) -> bool:
        principal = principal_of(request)
        # Returning False for an anonymous request makes DRF answer 401 with WWW-Authenticate
        # (the first authentication class's challenge), not 403.
        if principal is None:
            return False
        return bool(principal.has_permission(self.required_permission))


def HasPermission(permission: str) -> type[BasePermission]:  # noqa: N802 - reads as a class in permission_classes
    """The permission class requiring `permission`; composable with DRF's `&` and `|`."""
    if not _PERMISSION_FORMAT.match(permission):
        raise ValueError(f"Permission strings look like 'verb:resource', got {permission!r}.")
    with _lock:
        cls = _classes.get(permission)
        if cls is None:
            cls = type(
                f"HasPermission({permission})",
                (RequiresPermission,),
                {"required_permission": permission, "__doc__": f"Allows principals holding {permission!r}."},
            )
            _classes[permission] = cls
            _registry.add(permission)
    return cls


class IsAuthenticatedPrincipal(BasePermission):
    """Allows any authenticated principal (identity/me, identity/logout); counts as declared."""

    elsa_declared = True

    def has_permission(self, request, view) -> bool:
        return principal_of(request) is not None
