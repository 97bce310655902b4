"""HasPermission semantics, and a walk over every URL of the project that no endpoint is open by accident."""

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.permissions import OperandHolder, SingleOperandHolder

from identity.permissions import HasPermission, IsAuthenticatedPrincipal, RequiresPermission, known_permissions
from tests.identity.factories import principal_headers

# The anonymous allowlist of CONTRACT.md: health, schema and docs, login, refresh-token, token,
# bookmark resume, and the approval page. Everything else must declare a permission.
ANONYMOUS_ALLOWLIST = [
    r"^health/(live|ready)$",
    r"^elsa/api/(schema|docs|redoc)(/|$)",
    r"^elsa/api/identity/(login|refresh-token|token)$",
    r"^elsa/api/bookmarks/resume$",
    r"^elsa/approve(/|$)",
]
EXCLUDED_PREFIXES = ("admin/",)  # the admin is protected by staff sessions, not by the API's permissions


def iter_patterns(patterns, prefix=""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from iter_patterns(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry.callback


def declares_permission(permission) -> bool:
    """A permission class (or a composition) that cannot let an arbitrary principal through."""
    if isinstance(permission, OperandHolder):
        op1 = declares_permission(permission.op1_class)
        op2 = declares_permission(permission.op2_class)
        # `a | b` is only as strict as its weaker side; `a & b` as strict as its stricter side.
        return (op1 and op2) if permission.operator_class.__name__ == "OR" else (op1 or op2)
    if isinstance(permission, SingleOperandHolder):
        return False
    return isinstance(permission, type) and (
        issubclass(permission, RequiresPermission) or getattr(permission, "elsa_declared", False)
    )


def undeclared_endpoints() -> list[str]:
    problems = []
    for route, callback in iter_patterns(get_resolver().url_patterns):
        route = route.lstrip("^")
        if route.startswith(EXCLUDED_PREFIXES):
            continue
        allowlisted = any(re.search(pattern, route) for pattern in ANONYMOUS_ALLOWLIST)
        view_class = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
        if getattr(view_class, "elsa_anonymous", False) and not allowlisted:
            problems.append(f"{route}: marked elsa_anonymous but not on the anonymous allowlist")
            continue
        if allowlisted:
            continue
        if view_class is None or not hasattr(view_class, "permission_classes"):
            problems.append(f"{route}: not a DRF view, so it cannot declare HasPermission")
            continue
        declared = list(view_class.permission_classes)
        # `method_permissions` maps an HTTP method to one permission class or a list of them.
        for classes in getattr(view_class, "method_permissions", {}).values():
            declared.extend(classes if isinstance(classes, list | tuple) else [classes])
        if not declared or not all(declares_permission(p) for p in declared):
            problems.append(f"{route}: {view_class.__name__} lacks HasPermission(...)")
    return problems


def test_every_endpoint_outside_the_allowlist_declares_a_permission():
    problems = undeclared_endpoints()
    assert not problems, "Endpoints open by accident:\n" + "\n".join(problems)


def test_the_walk_catches_an_undeclared_view(settings, tmp_path, monkeypatch):
    import sys

    from rest_framework.permissions import AllowAny, IsAuthenticated
    from rest_framework.views import APIView

    class Open(APIView):
        permission_classes = [IsAuthenticated]

    class Loose(APIView):
        permission_classes = [AllowAny | HasPermission("read:role")]

    class Sneaky(APIView):
        elsa_anonymous = True
        permission_classes = [AllowAny]

    class Strict(APIView):
        permission_classes = [HasPermission("read:role") & IsAuthenticated]

    module = type(sys)("walk_urls")
    from django.urls import path

    module.urlpatterns = [
        path("elsa/api/open", Open.as_view()),
        path("elsa/api/loose", Loose.as_view()),
        path("elsa/api/sneaky", Sneaky.as_view()),
        path("elsa/api/strict", Strict.as_view()),
        path("health/live", Open.as_view()),
    ]
    monkeypatch.setitem(sys.modules, "walk_urls", module)
    settings.ROOT_URLCONF = "walk_urls"
    problems = undeclared_endpoints()
    assert [p.split(":")[0] for p in problems] == ["elsa/api/open", "elsa/api/loose", "elsa/api/sneaky"]


def test_has_permission_returns_one_class_per_string_and_registers_it():
    cls = HasPermission("frobnicate:widgets")
    assert cls is HasPermission("frobnicate:widgets")
    assert issubclass(cls, RequiresPermission) and cls.required_permission == "frobnicate:widgets"
    assert "frobnicate:widgets" in known_permissions()


@pytest.mark.parametrize("bad", ["", "read", "Read:Things", "read:things now", "*"])
def test_has_permission_refuses_malformed_strings(bad):
    with pytest.raises(ValueError):
        HasPermission(bad)


@pytest.mark.django_db
def test_unauthenticated_is_401_with_challenge_and_missing_permission_is_403(client):
    response = client.get("/elsa/api/identity/users")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "not_authenticated"
    response = client.get("/elsa/api/identity/users", **principal_headers("read:role"))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


@pytest.mark.django_db
def test_star_grants_every_permission(client):
    headers = principal_headers("*")
    assert client.get("/elsa/api/identity/users", **headers).status_code == 200
    assert client.get("/elsa/api/identity/applications", **headers).status_code == 200


@pytest.mark.django_db
def test_is_authenticated_principal_allows_any_principal(client):
    assert IsAuthenticatedPrincipal.elsa_declared
    assert client.get("/elsa/api/identity/me", **principal_headers()).status_code == 200


@pytest.mark.django_db
def test_admin_session_users_get_their_roles_permissions(client):
    from tests.identity.factories import RoleFactory, UserFactory

    user = UserFactory(roles=[RoleFactory(permissions=["read:user"])])
    client.force_login(user)
    assert client.get("/elsa/api/identity/users").status_code == 200
    assert client.get("/elsa/api/identity/roles").status_code == 403


@pytest.mark.django_db
def test_head_needs_the_get_permission(client):
    assert client.head("/elsa/api/identity/users", **principal_headers("read:role")).status_code == 403
    assert client.head("/elsa/api/identity/users", **principal_headers("read:user")).status_code == 200
