"""JSON log lines with a request id, and a filter that redacts sensitive values at any depth."""

import contextvars
import json
import logging
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

from django.conf import settings

REDACTED = "[redacted]"
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def key_form(key) -> str:
    """A key as it is compared with the sensitive keys: case, `_` or `-`, and WSGI's `HTTP_` prefix aside.

    The same header reaches a log record as `Authorization` (request.headers, httpx), `authorization`
    (ASGI, HTTP/2), `HTTP_AUTHORIZATION` (request.META, the WSGI environ) or `b"authorization"` (raw
    header pairs): all are one key here.
    """
    if isinstance(key, bytes | bytearray):
        key = bytes(key).decode("latin-1")
    return str(key).lower().replace("_", "-").removeprefix("http-")


# Keys whose values never reach a log line, whatever their depth in a structure (in key_form).
BASE_SENSITIVE_KEYS = frozenset(
    key_form(key)
    for key in (
        "input",
        "output",
        "outputs",
        "variables",
        "vars",
        "password",
        "token",
        "secret",
        "api_key",
        "apikey",
        "authorization",
        "proxy-authorization",
        "client_secret",
        "access_token",
        "refresh_token",
        "cookie",
        "set-cookie",
        "x-api-key",
        "credentials",
    )
)
# Resume tokens travel in `t=` query parameters; strip them from any logged URL or message.
_TOKEN_IN_URL = re.compile(r"((?:^|[?&;\s])t=)[^&\s\"']+")
_BEARER = re.compile(r"\b(Bearer|ApiKey)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
# `password=...`, `"client_secret": "..."` and the like inside free text (exception messages).
_KEY_VALUE = re.compile(
    r"""(\b(?:password|passwd|secret|client_secret|token|access_token|refresh_token|api_key|apikey)\b["']?\s*[:=]\s*["']?)"""
    r"""[^\s&"',;}]+""",
    re.IGNORECASE,
)


def sensitive_keys() -> frozenset[str]:
    """The keys to redact, in key_form: the base set and ELSA_LOG_REDACTED_FIELDS."""
    extra = getattr(settings, "ELSA_LOG_REDACTED_FIELDS", []) if settings.configured else []
    return BASE_SENSITIVE_KEYS | {key_form(k) for k in extra}


def scrub_text(text: str) -> str:
    """Remove resume tokens and credentials embedded in free text."""
    text = _TOKEN_IN_URL.sub(r"\1" + REDACTED, text)
    text = _KEY_VALUE.sub(r"\1" + REDACTED, text)
    return _BEARER.sub(r"\1 " + REDACTED, text)


def redact(value, keys: frozenset[str] | None = None, _depth: int = 0):
    """Return a copy of `value` with the values of sensitive keys replaced, at any depth."""
    keys = sensitive_keys() if keys is None else keys
    if _depth > 20:
        return REDACTED
    if isinstance(value, Mapping):
        return {k: (REDACTED if key_form(k) in keys else redact(v, keys, _depth + 1)) for k, v in value.items()}
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str | bytes):
        # A (name, value) tuple, as headers travel in WSGI's start_response or httpx's raw headers (tuples
        # only: a two-item JSON list such as ["input", "output"] is data, not a header).
        if key_form(value[0]) in keys:
            return [redact(value[0], keys, _depth + 1), REDACTED]
    if isinstance(value, list | tuple | set):
        return [redact(v, keys, _depth + 1) for v in value]
    if isinstance(value, str):
        return scrub_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    # Other objects (a WSGIRequest in django.request's extras) are logged by their text, whose
    # repr can carry a query string: scrub that text rather than trust the object.
    return scrub_text(str(value))


class RedactingFilter(logging.Filter):
    """Redacts sensitive keys in a record's args and extras, and tokens in its message."""

    _STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def filter(self, record: logging.LogRecord) -> bool:
        keys = sensitive_keys()
        if record.args:
            if isinstance(record.args, Mapping):
                record.args = redact(dict(record.args), keys)
            else:
                record.args = tuple(redact(a, keys) for a in record.args)
        # Render the message first, then scrub the whole text: a token can sit in the format
        # string itself (`?t=%s`) or in an argument.
        try:
            rendered = record.getMessage()
        except (TypeError, ValueError):
            rendered = str(record.msg)
        record.msg, record.args = scrub_text(rendered), None
        for name in list(record.__dict__):
            if name in self._STANDARD:
                continue
            record.__dict__[name] = REDACTED if key_form(name) in keys else redact(record.__dict__[name], keys)
        return True


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object per line."""

    _STANDARD = RedactingFilter._STANDARD

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub_text(record.getMessage()),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            payload["request_id"] = request_id
        for name, value in record.__dict__.items():
            if name not in self._STANDARD and name not in payload and not name.startswith("_"):
                payload[name] = value
        if record.exc_info:
            payload["exc_info"] = scrub_text(self.formatException(record.exc_info))
        return json.dumps(payload, default=str)


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    """Tags each request (and its log lines) with an id, honouring a well-formed X-Request-ID."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = request_id
        return response
