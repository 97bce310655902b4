"""One error shape for the API: {"error": {"code", "message"}}, mapped from every exception."""

import logging

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, JsonResponse
from django_ratelimit.exceptions import Ratelimited
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger("elsa.errors")


class DomainError(Exception):
    """A refused operation with an HTTP status; services raise subclasses, views never catch."""

    http_status = status.HTTP_400_BAD_REQUEST
    code = "invalid"
    # A finer reason than `code`, for the audit log only (the response keeps the generic code).
    reason = ""

    def __init__(self, message: str, *, code: str | None = None, details=None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details


class InvalidInput(DomainError):
    http_status = status.HTTP_400_BAD_REQUEST
    code = "invalid"


class NotFound(DomainError):
    http_status = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(DomainError):
    http_status = status.HTTP_409_CONFLICT
    code = "conflict"


class Gone(DomainError):
    http_status = status.HTTP_404_NOT_FOUND
    code = "gone"


class TooManyRequests(DomainError):
    http_status = status.HTTP_429_TOO_MANY_REQUESTS
    code = "rate_limited"


class Unavailable(DomainError):
    """The server's own configuration or a dependency keeps the operation from being checked: retry later."""

    http_status = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "unavailable"


def error_body(code: str, message: str, details=None) -> dict:
    body = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return body


# Codes for DRF's own exceptions, whose messages never contain request data.
_DRF_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
    exceptions.ParseError: "malformed_request",
}


def _validation_message(detail) -> tuple[str, object]:
    # Field errors name fields and rules; DRF never copies the submitted value into them.
    return "The request is not valid.", detail


def api_exception_handler(exc, context):
    """Map any exception raised in an API view to the project's error body and status."""
    if isinstance(exc, DomainError):
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.http_status)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("payload_too_large", "The request body is too large."),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, Ratelimited):
        return Response(error_body("rate_limited", "Too many requests."), status=status.HTTP_429_TOO_MANY_REQUESTS)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, SuspiciousOperation):
        exc = exceptions.ParseError("The request was rejected.")

    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("unhandled error in API view", exc_info=exc)
        return Response(
            error_body("server_error", "An internal error occurred."), status=status.HTTP_500_INTERNAL_SERVER_ERROR
        )
    if isinstance(exc, exceptions.ValidationError):
        message, details = _validation_message(exc.detail)
        response.data = error_body("invalid", message, details)
        return response
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), None)
    code = code or (exc.get_codes() if isinstance(exc.get_codes(), str) else "error")
    message = exc.detail if isinstance(exc.detail, str) else "The request failed."
    response.data = error_body(code, str(message))
    return response


def _json_error(status_code: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status_code)


def ratelimited_view(request, exception=None):
    """django-ratelimit's view for 429 outside DRF (admin login)."""
    return _json_error(429, "rate_limited", "Too many requests.")


def handler400(request, exception=None):
    if isinstance(exception, RequestDataTooBig):
        return _json_error(413, "payload_too_large", "The request body is too large.")
    return _json_error(400, "bad_request", "The request was rejected.")


def handler403(request, exception=None):
    return _json_error(403, "permission_denied", "You do not have permission to perform this action.")


def handler404(request, exception=None):
    return _json_error(404, "not_found", "Not found.")


def handler500(request):
    return _json_error(500, "server_error", "An internal error occurred.")
