"""Bookmarks HTTP API: list an instance's bookmarks, mint and revoke tokens, and the anonymous resume endpoint."""

from django.conf import settings
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.actors import actor_from_request, client_ip
from bookmarks import selectors, serializers, services
from bookmarks.models import Bookmark, ResumeToken
from bookmarks.ratelimits import resume_rate_check
from bookmarks.resume_input import body_preload, input_from_body, input_from_query
from elsa_site.errors import TooManyRequests
from identity.permissions import HasPermission
from workflows.models import WorkflowInstance

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class InstanceBookmarkListView(APIView):
    permission_classes = [HasPermission("read:bookmarks")]

    @extend_schema(responses=serializers.BookmarkListOut)
    def get(self, request, instance_id):
        instance = get_object_or_404(WorkflowInstance, pk=instance_id)
        bookmarks = selectors.instance_bookmarks(instance=instance)
        return Response({"items": serializers.BookmarkOut(bookmarks, many=True).data})


class BookmarkTokenIssueView(APIView):
    permission_classes = [HasPermission("issue:bookmark-tokens")]

    @extend_schema(request=serializers.TokenIssueIn, responses={201: serializers.TokenIssueOut})
    def post(self, request, bookmark_id):
        bookmark = get_object_or_404(Bookmark, pk=bookmark_id)
        data = serializers.TokenIssueIn(data=request.data)
        data.is_valid(raise_exception=True)
        issued = services.resume_token_issue(
            bookmark=bookmark,
            actor=actor_from_request(request),
            ttl_seconds=data.validated_data.get("ttl_seconds"),
            expires_at=data.validated_data.get("expires_at"),
        )
        # The only response that ever carries a token: not cacheable anywhere.
        return Response(serializers.TokenIssueOut(issued).data, status=status.HTTP_201_CREATED, headers=NO_STORE)


class BookmarkRevokeView(APIView):
    permission_classes = [HasPermission("revoke:bookmarks")]

    @extend_schema(request=serializers.RevokeIn, responses=serializers.BookmarkOut)
    def post(self, request, bookmark_id):
        bookmark = get_object_or_404(Bookmark, pk=bookmark_id)
        data = serializers.RevokeIn(data=request.data)
        data.is_valid(raise_exception=True)
        actor = actor_from_request(request)
        token_id = data.validated_data.get("token_id")
        if token_id is not None:
            token = get_object_or_404(ResumeToken, pk=token_id, bookmark=bookmark)
            services.resume_token_revoke(token=token, actor=actor)
        else:
            services.bookmark_revoke(bookmark=bookmark, actor=actor)
        bookmark = selectors.instance_bookmarks(instance=bookmark.instance).get(pk=bookmark.pk)
        return Response(serializers.BookmarkOut(bookmark).data)


class ResumeView(APIView):
    """Anonymous by design: the encrypted token in `t` is the credential (allowlisted in the URL walk)."""

    elsa_anonymous = True
    authentication_classes: list = []
    permission_classes = [AllowAny]
    # The body is parsed by bookmarks.resume_input, and only after the token checks passed.
    parser_classes: list = []
    # No HEAD: Django would answer it with get(), and a link checker's HEAD must never resume.
    http_method_names = ["get", "post", "options"]

    def handle_exception(self, exc):
        response = super().handle_exception(exc)
        if response.status_code == status.HTTP_401_UNAUTHORIZED and not response.has_header("WWW-Authenticate"):
            response["WWW-Authenticate"] = 'Token realm="elsa-resume", error="invalid_token"'
        for name, value in NO_STORE.items():
            response[name] = value
        return response

    def _resume(self, request, *, read_input):
        django_request = request._request
        attempt = services.ResumeAttempt(
            token=request.query_params.get("t"),
            client_ip=client_ip(django_request),
            user_agent=request.META.get("HTTP_USER_AGENT", ""),
            channel="api",
            read_input=lambda: read_input(django_request),
            preload=(lambda: body_preload(django_request)) if request.method == "POST" else None,
        )
        # First check of the contract's order: the per-IP limit, before any cryptography or query.
        decision = resume_rate_check(django_request)
        if decision.limited:
            if decision.first_refusal:
                services.resume_attempt_audit_failure(attempt=attempt, reason="rate_limited", status=429)
            raise TooManyRequests("Too many requests.")
        if request.method == "GET" and not settings.ELSA_RESUME_ALLOW_GET:
            services.resume_attempt_audit_failure(attempt=attempt, reason="get_disabled", status=405)
            raise exceptions.MethodNotAllowed("GET")
        result = services.bookmark_resume(attempt=attempt)
        # The shape of serializers.ResumeOut (the schema), built directly: two strings need no serializer.
        body = {"instance_id": str(result.instance.pk), "status": str(result.instance.status)}
        return Response(body, headers=NO_STORE)

    @extend_schema(
        parameters=[
            OpenApiParameter("t", OpenApiTypes.STR, required=True, description="The resume token."),
            OpenApiParameter("in", OpenApiTypes.STR, description="The resume input as a JSON object."),
        ],
        responses=serializers.ResumeOut,
    )
    def get(self, request):
        return self._resume(request, read_input=input_from_query)

    @extend_schema(
        parameters=[OpenApiParameter("t", OpenApiTypes.STR, required=True, description="The resume token.")],
        request=serializers.ResumeIn,
        responses=serializers.ResumeOut,
    )
    def post(self, request):
        return self._resume(request, read_input=input_from_body)
