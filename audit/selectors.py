"""Reads of the audit app: filtered, cursor-paginated search of events."""

import base64
import binascii
from datetime import datetime

from django.db.models import QuerySet
from django.utils.dateparse import parse_datetime

from audit import verification
from audit.models import AuditEvent
from elsa_site.errors import InvalidInput, NotFound

MAX_LIMIT = 100
DEFAULT_LIMIT = 50

# Exact-match filters: query parameter -> column (all indexed).
_EXACT_FILTERS = ("event_type", "action", "result", "resource_type", "resource_id", "actor_id")


def encode_cursor(event_id: int) -> str:
    """An opaque cursor: clients pass it back, never build it."""
    return base64.urlsafe_b64encode(f"v1:{event_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, value = raw.partition(":")
        if version != "v1":
            raise ValueError(version)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidInput("The cursor is not valid.", code="invalid_cursor") from exc


def _parse_datetime(name: str, value: str) -> datetime:
    try:
        parsed = parse_datetime(value)
    except ValueError:
        parsed = None
    if parsed is None:
        raise InvalidInput(f"{name} must be an ISO-8601 date and time.")
    if parsed.tzinfo is None:
        raise InvalidInput(f"{name} must include a time zone (e.g. Z or +00:00).")
    return parsed


def audit_event_search(
    *,
    filters: dict[str, str],
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
    order: str = "asc",
) -> tuple[list[AuditEvent], str | None]:
    """One page of events matching the filters, and the cursor of the next page (or None)."""
    if order not in ("asc", "desc"):
        raise InvalidInput("order must be asc or desc.")
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}.")
    queryset: QuerySet = AuditEvent.objects.all()
    for name in _EXACT_FILTERS:
        value = filters.get(name)
        if value not in (None, ""):
            queryset = queryset.filter(**{name: value})
    if filters.get("date_from"):
        queryset = queryset.filter(timestamp__gte=_parse_datetime("date_from", filters["date_from"]))
    if filters.get("date_to"):
        queryset = queryset.filter(timestamp__lt=_parse_datetime("date_to", filters["date_to"]))
    if cursor:
        after = decode_cursor(cursor)
        queryset = queryset.filter(id__gt=after) if order == "asc" else queryset.filter(id__lt=after)
    queryset = queryset.order_by("id" if order == "asc" else "-id")
    page = list(queryset[: limit + 1])
    next_cursor = encode_cursor(page[limit - 1].id) if len(page) > limit else None
    return page[:limit], next_cursor


def audit_event_get(*, event_id: int) -> AuditEvent:
    try:
        return AuditEvent.objects.get(id=event_id)
    except AuditEvent.DoesNotExist as exc:
        raise NotFound("No audit event with this id.") from exc


def audit_event_in_chain(*, event_id: int) -> None:
    """Raise NotFound unless the chain has reached this id: an event is stored at or after it, or a
    validly signed checkpoint names it or a later one (the event itself, even the tail, may have been cut).
    An id up to a valid purge anchor (purge_audit) is NotFound too: its event is only in its archive."""
    if 1 <= event_id <= verification.chain_start().purged_through:
        raise NotFound("This audit event was purged (archived with export_audit, then deleted with purge_audit).")
    if event_id >= 1 and (
        AuditEvent.objects.filter(id__gte=event_id).exists() or verification.signed_checkpoint_reaches(event_id)
    ):
        return
    raise NotFound("No audit event with this id.")
