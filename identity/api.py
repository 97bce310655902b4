"""Identity HTTP API: login, tokens, me, and users, roles and applications management."""

import base64
import binascii
from collections.abc import Mapping
from datetime import timedelta
from urllib.parse import unquote

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django_ratelimit.core import is_ratelimited
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import FormParser, JSONParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.actors import actor_from_request, client_ip
from elsa_site.errors import DomainError, TooManyRequests
from identity import selectors, serializers, services
from identity.models import Application, Role, User
from identity.permissions import HasPermission, IsAuthenticatedPrincipal

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def rate_limited(request, *, scope: str, subject: str) -> bool:
    """Count this attempt per client IP and per subject (username or client id); True when over."""
    django_request = getattr(request, "_request", request)
    rate = settings.ELSA_LOGIN_RATE
    ip = client_ip(django_request) or "unknown"
    # Both counters are incremented on every attempt, so neither rotating IPs against one account
    # nor rotating accounts from one IP escapes the limit.
    by_ip = is_ratelimited(django_request, group=f"{scope}-ip", key=lambda group, req: ip, rate=rate, increment=True)
    by_subject = bool(subject) and is_ratelimited(
        django_request,
        group=f"{scope}-subject",
        key=lambda group, req: subject.lower()[:200],
        rate=rate,
        increment=True,
    )
    return by_ip or by_subject


class JsonOnlyNegotiation(BaseContentNegotiation):
    """The API renders JSON only: skip parsing the Accept header on every request."""

    def select_parser(self, request, parsers):
        content_type = request.content_type.split(";")[0].strip().lower()
        return next((p for p in parsers if p.media_type == content_type), None)

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class IdentityView(APIView):
    """Adds the Bearer challenge to 401 answers raised as domain errors (bad credentials)."""

    content_negotiation_class = JsonOnlyNegotiation

    def handle_exception(self, exc):
        response = super().handle_exception(exc)
        if response.status_code == status.HTTP_401_UNAUTHORIZED and not response.has_header("WWW-Authenticate"):
            response["WWW-Authenticate"] = 'Bearer realm="elsa"'
        return response


class AnonymousView(IdentityView):
    """An allowlisted anonymous endpoint (see the URL-walk test): credentials are its body."""

    elsa_anonymous = True
    authentication_classes: list = []
    permission_classes = [AllowAny]


class LoginView(AnonymousView):
    @extend_schema(request=serializers.LoginInput, responses=serializers.TokenPairOutput)
    def post(self, request):
        data = serializers.LoginInput(data=request.data)
        data.is_valid(raise_exception=True)
        username = data.validated_data["username"]
        actor = actor_from_request(request)
        if rate_limited(request, scope="login", subject=username):
            services.login_failure_record(actor=actor, username=username, reason="rate_limited")
            raise TooManyRequests("Too many login attempts; try again later.")
        pair = services.user_login(username=username, password=data.validated_data["password"], actor=actor)
        return Response(serializers.TokenPairOutput(pair).data, headers=NO_STORE)


class RefreshTokenView(AnonymousView):
    @extend_schema(request=serializers.RefreshInput, responses=serializers.TokenPairOutput)
    def post(self, request):
        data = serializers.RefreshInput(data=request.data)
        data.is_valid(raise_exception=True)
        pair = services.token_refresh(
            refresh_token=data.validated_data["refresh_token"], actor=actor_from_request(request)
        )
        return Response(serializers.TokenPairOutput(pair).data, headers=NO_STORE)


class LogoutView(IdentityView):
    permission_classes = [IsAuthenticatedPrincipal]

    @extend_schema(request=serializers.RefreshInput, responses={204: None})
    def post(self, request):
        data = serializers.RefreshInput(data=request.data)
        data.is_valid(raise_exception=True)
        services.user_logout(refresh_token=data.validated_data["refresh_token"], actor=actor_from_request(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class OAuthError(DomainError):
    """An RFC 6749 token endpoint error; `code` is the OAuth `error` value."""


class TokenView(AnonymousView):
    """OAuth 2 client_credentials grant. Errors use RFC 6749's body, not the project's error shape."""

    parser_classes = [FormParser, JSONParser]

    def client_credentials(self, request) -> tuple[str, str]:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            # RFC 6749 2.3: a client MUST NOT use more than one authentication method per request.
            if "client_id" in request.data or "client_secret" in request.data:
                raise OAuthError("Use either HTTP Basic or client_id/client_secret, not both.", code="invalid_request")
            # RFC 6749 2.3.1: form-urlencoded client id and secret in HTTP Basic.
            try:
                client_id, _, client_secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise OAuthError("Malformed Basic credentials.", code="invalid_request") from exc
            return unquote(client_id), unquote(client_secret)
        client_id, client_secret = request.data.get("client_id"), request.data.get("client_secret")
        if not isinstance(client_id, str) or not isinstance(client_secret, str) or not client_id or not client_secret:
            raise OAuthError("client_id and client_secret are required.", code="invalid_request")
        return client_id[:200], client_secret[:1024]

    @extend_schema(request=None, responses=serializers.ClientTokenOutput)
    def post(self, request):
        # A JSON body may be a list, string, number or null: only an object carries parameters.
        if not isinstance(request.data, Mapping):
            raise OAuthError("The request body must be an object of parameters.", code="invalid_request")
        grant_type = request.data.get("grant_type")
        if not grant_type:
            raise OAuthError("grant_type is required.", code="invalid_request")
        if grant_type != "client_credentials":
            raise OAuthError("Only client_credentials is supported.", code="unsupported_grant_type")
        client_id, client_secret = self.client_credentials(request)
        actor = actor_from_request(request)
        if rate_limited(request, scope="token", subject=client_id):
            services.client_failure_record(actor=actor, client_id=client_id, reason="rate_limited")
            raise OAuthError("Too many requests; try again later.", code="slow_down")
        token = services.client_credentials_token(client_id=client_id, client_secret=client_secret, actor=actor)
        return Response(serializers.ClientTokenOutput(token).data, headers=NO_STORE)

    def handle_exception(self, exc):
        if isinstance(exc, OAuthError | services.InvalidClient):
            code = exc.code
        elif isinstance(exc, exceptions.ParseError | exceptions.UnsupportedMediaType):
            code = "invalid_request"
        else:
            return super().handle_exception(exc)
        http_status = {"invalid_client": 401, "slow_down": 429}.get(code, 400)
        message = exc.message if isinstance(exc, DomainError) else "The request body cannot be parsed."
        response = Response({"error": code, "error_description": message}, status=http_status, headers=NO_STORE)
        if http_status == 401:
            response["WWW-Authenticate"] = 'Basic realm="elsa"'
        return response


class MeView(IdentityView):
    permission_classes = [IsAuthenticatedPrincipal]

    @extend_schema(responses=serializers.MeOutput)
    def get(self, request):
        principal = request.user
        # A plain JsonResponse: the same JSON without DRF's renderer pass on this hot endpoint.
        return JsonResponse(
            {
                "type": principal.actor_type,
                "id": str(principal.actor_id),
                "name": principal.actor_name,
                "permissions": sorted(principal.permissions),
            }
        )


def _caller(request) -> frozenset[str]:
    """The permissions of the authenticated caller: it may grant, and change holders of, only these."""
    return frozenset(request.user.permissions)


MAX_OFFSET = 2**31 - 1


def _page(request, queryset, serializer_class) -> Response:
    try:
        limit = min(max(int(request.query_params.get("limit", 50)), 1), 200)
        offset = max(int(request.query_params.get("offset", 0)), 0)
    except ValueError as exc:
        raise exceptions.ValidationError({"limit": "limit and offset must be integers."}) from exc
    # PostgreSQL's OFFSET is a bigint: a larger one would fail in the database (500).
    if offset > MAX_OFFSET:
        raise exceptions.ValidationError({"offset": f"offset must be at most {MAX_OFFSET}."})
    items = list(queryset[offset : offset + limit + 1])
    body = {"items": serializer_class(items[:limit], many=True).data}
    body["next_offset"] = offset + limit if len(items) > limit else None
    return Response(body)


class MethodPermissionView(IdentityView):
    """Picks permission_classes per HTTP method from `method_permissions`."""

    method_permissions: dict = {}

    def get_permissions(self):
        # HEAD runs the GET handler, so it needs GET's permission; OPTIONS only describes the view.
        method = "GET" if self.request.method == "HEAD" else self.request.method
        classes = self.method_permissions.get(method, [IsAuthenticatedPrincipal])
        return [cls() for cls in classes]


class RoleListView(MethodPermissionView):
    permission_classes = [HasPermission("read:role")]
    method_permissions = {"GET": [HasPermission("read:role")], "POST": [HasPermission("create:role")]}

    @extend_schema(responses=serializers.RoleOutput(many=True))
    def get(self, request):
        return _page(request, Role.objects.all(), serializers.RoleOutput)

    @extend_schema(request=serializers.RoleInput, responses={201: serializers.RoleOutput})
    def post(self, request):
        data = serializers.RoleInput(data=request.data)
        data.is_valid(raise_exception=True)
        role = services.role_create(
            actor=actor_from_request(request), caller_permissions=_caller(request), **data.validated_data
        )
        return Response(serializers.RoleOutput(role).data, status=status.HTTP_201_CREATED)


class RoleDetailView(MethodPermissionView):
    permission_classes = [HasPermission("read:role")]
    method_permissions = {
        "GET": [HasPermission("read:role")],
        "PATCH": [HasPermission("update:role")],
        "PUT": [HasPermission("update:role")],
        "DELETE": [HasPermission("delete:role")],
    }

    @extend_schema(responses=serializers.RoleOutput)
    def get(self, request, pk: int):
        return Response(serializers.RoleOutput(get_object_or_404(Role, pk=pk)).data)

    @extend_schema(request=serializers.RoleInput, responses=serializers.RoleOutput)
    def patch(self, request, pk: int):
        role = get_object_or_404(Role, pk=pk)
        data = serializers.RoleInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        role = services.role_update(
            role=role, actor=actor_from_request(request), caller_permissions=_caller(request), **data.validated_data
        )
        return Response(serializers.RoleOutput(role).data)

    put = patch

    @extend_schema(responses={204: None})
    def delete(self, request, pk: int):
        services.role_delete(
            role=get_object_or_404(Role, pk=pk), actor=actor_from_request(request), caller_permissions=_caller(request)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class UserListView(MethodPermissionView):
    permission_classes = [HasPermission("read:user")]
    method_permissions = {"GET": [HasPermission("read:user")], "POST": [HasPermission("create:user")]}

    @extend_schema(responses=serializers.UserOutput(many=True))
    def get(self, request):
        return _page(request, selectors.users(), serializers.UserOutput)

    @extend_schema(request=serializers.UserCreateInput, responses={201: serializers.UserOutput})
    def post(self, request):
        data = serializers.UserCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_create(
            actor=actor_from_request(request), caller_permissions=_caller(request), **data.validated_data
        )
        return Response(serializers.UserOutput(user).data, status=status.HTTP_201_CREATED)


class UserDetailView(MethodPermissionView):
    permission_classes = [HasPermission("read:user")]
    method_permissions = {
        "GET": [HasPermission("read:user")],
        "PATCH": [HasPermission("update:user")],
        "DELETE": [HasPermission("delete:user")],
    }

    @extend_schema(responses=serializers.UserOutput)
    def get(self, request, pk: int):
        return Response(serializers.UserOutput(get_object_or_404(selectors.users(), pk=pk)).data)

    @extend_schema(request=serializers.UserUpdateInput, responses=serializers.UserOutput)
    def patch(self, request, pk: int):
        user = get_object_or_404(User, pk=pk)
        data = serializers.UserUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        user = services.user_update(
            user=user, actor=actor_from_request(request), caller_permissions=_caller(request), **data.validated_data
        )
        return Response(serializers.UserOutput(user).data)

    @extend_schema(responses={204: None})
    def delete(self, request, pk: int):
        services.user_delete(
            user=get_object_or_404(User, pk=pk), actor=actor_from_request(request), caller_permissions=_caller(request)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class ApplicationListView(MethodPermissionView):
    permission_classes = [HasPermission("read:application")]
    method_permissions = {"GET": [HasPermission("read:application")], "POST": [HasPermission("create:application")]}

    @extend_schema(responses=serializers.ApplicationOutput(many=True))
    def get(self, request):
        return _page(request, selectors.applications(), serializers.ApplicationOutput)

    @extend_schema(request=serializers.ApplicationCreateInput, responses={201: serializers.ApplicationCreatedOutput})
    def post(self, request):
        data = serializers.ApplicationCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        application, client_secret, api_key = services.application_create(
            actor=actor_from_request(request), caller_permissions=_caller(request), **data.validated_data
        )
        body = serializers.ApplicationOutput(application).data
        # The secrets exist only in this response: the database keeps their hashes.
        body.update(client_secret=client_secret, api_key=api_key)
        return Response(body, status=status.HTTP_201_CREATED, headers=NO_STORE)


class ApplicationDetailView(MethodPermissionView):
    permission_classes = [HasPermission("read:application")]
    method_permissions = {
        "GET": [HasPermission("read:application")],
        "PATCH": [HasPermission("update:application")],
        "DELETE": [HasPermission("delete:application")],
    }

    @extend_schema(responses=serializers.ApplicationOutput)
    def get(self, request, pk: int):
        return Response(serializers.ApplicationOutput(get_object_or_404(selectors.applications(), pk=pk)).data)

    @extend_schema(request=serializers.ApplicationUpdateInput, responses=serializers.ApplicationOutput)
    def patch(self, request, pk: int):
        application = get_object_or_404(Application, pk=pk)
        data = serializers.ApplicationUpdateInput(data=request.data)
        data.is_valid(raise_exception=True)
        application = services.application_update(
            application=application,
            actor=actor_from_request(request),
            caller_permissions=_caller(request),
            **data.validated_data,
        )
        return Response(serializers.ApplicationOutput(application).data)

    @extend_schema(responses={204: None})
    def delete(self, request, pk: int):
        services.application_delete(
            application=get_object_or_404(Application, pk=pk),
            actor=actor_from_request(request),
            caller_permissions=_caller(request),
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class ApplicationRotateView(IdentityView):
    permission_classes = [HasPermission("update:application")]

    @extend_schema(request=serializers.ApplicationRotateInput, responses=serializers.ApplicationRotatedOutput)
    def post(self, request, pk: int):
        application = get_object_or_404(Application, pk=pk)
        data = serializers.ApplicationRotateInput(data=request.data)
        data.is_valid(raise_exception=True)
        valid_until = data.validated_data["old_key_valid_until"]
        if valid_until is None and data.validated_data["grace_seconds"]:
            valid_until = timezone.now() + timedelta(seconds=data.validated_data["grace_seconds"])
        _, api_key, client_secret = services.application_rotate(
            application=application,
            old_key_valid_until=valid_until,
            rotate_client_secret=data.validated_data["rotate_client_secret"],
            actor=actor_from_request(request),
            caller_permissions=_caller(request),
        )
        body = {"api_key": api_key, "client_secret": client_secret, "old_key_valid_until": valid_until}
        return Response(serializers.ApplicationRotatedOutput(body).data, headers=NO_STORE)


class ApplicationDisableView(IdentityView):
    permission_classes = [HasPermission("update:application")]
    enabled = False

    @extend_schema(request=None, responses=serializers.ApplicationOutput)
    def post(self, request, pk: int):
        application = services.application_set_enabled(
            application=get_object_or_404(Application, pk=pk),
            enabled=self.enabled,
            actor=actor_from_request(request),
            caller_permissions=_caller(request),
        )
        return Response(serializers.ApplicationOutput(application).data)


class ApplicationEnableView(ApplicationDisableView):
    enabled = True
