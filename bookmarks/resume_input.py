"""Resume input: read from a request (JSON, at most 1 MiB) and checked against the bookmark's JSON Schema."""

import functools
import json

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from rest_framework import status

from elsa_site.errors import DomainError, InvalidInput
from workflows.validation import json_schema_validator, reference_problems

MAX_INPUT_BYTES = 1024 * 1024
MAX_REPORTED_ERRORS = 20


class InputRejected(DomainError):
    """The resume input was refused; counts towards the bookmark's soft block."""

    reason = "input_invalid"


class InputNotJson(InputRejected):
    http_status = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    code = "unsupported_media_type"
    reason = "input_not_json"


class InputTooLarge(InputRejected):
    http_status = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "payload_too_large"
    reason = "input_too_large"


class InputMalformed(InputRejected, InvalidInput):
    code = "invalid_input"
    reason = "input_malformed"


class InputSchemaViolation(InputRejected, InvalidInput):
    code = "schema_violation"
    reason = "input_schema_violation"


def _max_bytes() -> int:
    return min(MAX_INPUT_BYTES, getattr(settings, "DATA_UPLOAD_MAX_MEMORY_SIZE", None) or MAX_INPUT_BYTES)


def _parse_object(raw: str | bytes, *, where: str) -> dict:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # The message never quotes the input, nor json's error (it shows a slice of the document).
        raise InputMalformed(f"The {where} is not valid JSON.") from exc
    return value


def _is_json(request) -> bool:
    content_type = request.META.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def _declared_length(request) -> int | None:
    declared = request.META.get("CONTENT_LENGTH") or ""
    return int(declared) if declared.isdigit() else None


def _is_chunked(request) -> bool:
    # gunicorn hands a `Transfer-Encoding: chunked` body over without CONTENT_LENGTH, and Django's
    # request then reads 0 bytes of it (its stream stops at the declared length): read the WSGI
    # stream ourselves, or the body would silently count as empty.
    return _declared_length(request) is None and bool(request.META.get("HTTP_TRANSFER_ENCODING"))


def _stream_read(request) -> bytes:
    """A chunked body, read from the WSGI stream at most one byte past the limit (kept for a second call)."""
    cached = getattr(request, "elsa_streamed_body", None)
    if cached is None:
        stream, limit = request.environ["wsgi.input"], _max_bytes() + 1
        chunks, size = [], 0
        while size < limit:
            chunk = stream.read(limit - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        cached = request.elsa_streamed_body = b"".join(chunks)
    return cached


def _raw_body(request) -> bytes:
    """The body, at most 1 MiB (InputTooLarge beyond), from a Content-Length or a chunked request."""
    if _is_chunked(request):
        body = _stream_read(request)
    else:
        declared = _declared_length(request) or 0
        if declared > _max_bytes():
            raise InputTooLarge("The request body is over 1 MiB.")
        try:
            body = request.body
        except RequestDataTooBig as exc:
            raise InputTooLarge("The request body is over 1 MiB.") from exc
    if len(body) > _max_bytes():
        raise InputTooLarge("The request body is over 1 MiB.")
    return body


def input_from_body(request) -> dict:
    """The `input` object of a POST body `{"input": {...}}`; an empty body means no input.

    Checked in the contract's order: the content type (415, before any byte is read), the size
    (413), then the JSON (400).
    """
    if not _is_chunked(request) and not _declared_length(request):
        return {}
    if not _is_json(request):
        raise InputNotJson("The request body must be application/json.")
    body = _raw_body(request)
    if not body.strip():
        return {}
    document = _parse_object(body, where="request body")
    if not isinstance(document, dict):
        raise InputMalformed('The request body must be a JSON object like {"input": {...}}.')
    value = document.get("input", {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputMalformed("The input must be a JSON object.")
    return value


def body_preload(request) -> None:
    """Read a body of at most 1 MiB into memory (cached for input_from_body); parse nothing, refuse nothing."""
    if _is_chunked(request):
        if _is_json(request):  # otherwise refused with 415 unread
            _stream_read(request)
        return
    declared = _declared_length(request) or 0
    if 0 < declared <= _max_bytes():
        request.body  # noqa: B018 - the read is the point: HttpRequest.body caches it


def input_from_query(request) -> dict:
    """The input of a GET resume: JSON in the query parameter `in` (absent means no input)."""
    raw = request.GET.get("in")
    if raw is None or raw == "":
        return {}
    if len(raw.encode()) > _max_bytes():
        raise InputTooLarge("The input is over 1 MiB.")
    value = _parse_object(raw, where="`in` query parameter")
    if not isinstance(value, dict):
        raise InputMalformed("The input must be a JSON object.")
    return value


def _error_message(error) -> str:
    # Built from the schema (keyword and its schema value), never from the instance: jsonschema's
    # own messages quote the submitted value, which may be confidential.
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [name for name in error.validator_value if name not in error.instance]
        return f"missing required properties: {', '.join(map(str, missing))}"
    if error.validator == "type":
        return f"must be of type {error.validator_value}"
    if error.validator in {"enum", "const"}:
        return "is not one of the allowed values"
    if error.validator == "additionalProperties":
        return "has properties the schema does not allow"
    if error.validator in {
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "multipleOf",
    }:
        return f"fails {error.validator} {error.validator_value}"
    return f"fails the '{error.validator}' constraint"


def _schema_pointer(path) -> str:
    return "/" + "/".join(str(part).replace("~", "~0").replace("/", "~1") for part in path) if path else ""


@functools.lru_cache(maxsize=256)
def _validator(schema_text: str) -> Draft202012Validator:
    # Keyed by the schema's canonical JSON: bookmarks of one WaitForResume share one compiled
    # validator instead of building it on every resume. Validators are immutable, so threads share it.
    return json_schema_validator(json.loads(schema_text))  # never fetches a $ref (SSRF)


_LOOP_ERROR = {"schema_path": "", "message": "the input schema's references loop without end"}


def schema_errors(schema: dict | None, value) -> list[dict]:
    """Where `value` violates `schema`: [{"schema_path", "message"}], at most 20, never quoting the value."""
    if not schema:
        return []
    validator = _validator(json.dumps(schema, sort_keys=True, separators=(",", ":")))
    try:
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_schema_path))
    except RecursionError:
        # A reference cycle that never descends into the value ({"$ref": "#"}): refused, not a 500.
        return [dict(_LOOP_ERROR)]
    return [
        {"schema_path": _schema_pointer(error.absolute_schema_path), "message": _error_message(error)}
        for error in errors[:MAX_REPORTED_ERRORS]
    ]


def input_validate(schema: dict | None, value) -> None:
    """Raise InputSchemaViolation (400) listing the schema errors when `value` does not conform."""
    errors = schema_errors(schema, value)
    if errors:
        raise InputSchemaViolation("The input does not match the bookmark's input schema.", details=errors)


def schema_problems(schema) -> list[str]:
    """Why `schema` is not a usable JSON Schema (for definition validation); empty when it is."""
    if not isinstance(schema, dict):
        return ["must be a JSON Schema object"]
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return [f"is not a valid JSON Schema ({exc.validator} at {_schema_pointer(exc.absolute_schema_path)})"]
    problems = [f"{problem['message']} ({problem['pointer']})" for problem in reference_problems(schema)]
    samples: tuple[object, ...] = (None, {})
    if not problems and any(_LOOP_ERROR in schema_errors(schema, value) for value in samples):
        problems.append("has references that loop without end")
    return problems
