"""The hash chain: canonical serialization of an event, its SHA-256, and JSON normalization."""

import hashlib
import hmac
import json
import math
import re
from datetime import UTC, datetime
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]

from django.core.serializers.json import DjangoJSONEncoder

# The previous_hash of the first event: no real SHA-256 digest is 64 zeros in practice.
GENESIS_HASH = "0" * 64

# An event's hashed columns (the keyword arguments of canonical_event()), then its stored hash.
EVENT_COLUMNS = (
    "id",
    "event_id",
    "timestamp",
    "event_type",
    "action",
    "result",
    "resource_type",
    "resource_id",
    "actor_type",
    "actor_id",
    "actor_name",
    "actor_ip",
    "context",
    "metadata",
    "previous_hash",
    "hash",
)

# Sorted keys, no whitespace, ASCII only, no NaN/Infinity: the same bytes on every host and version.
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode
_quote = encode_basestring_ascii

# The canonical JSON object of an event, keys already in sorted order. Filling this template with
# JSON-encoded values gives exactly json.dumps(record, sort_keys=True, separators=(",", ":")),
# without building and sorting a dict per event (verification runs this for every event).
TEMPLATE = (
    '{"action":%s,"actor_id":%s,"actor_ip":%s,"actor_name":%s,"actor_type":%s,"context":%s,'
    '"event_id":%s,"event_type":%s,"id":%s,"metadata":%s,"previous_hash":%s,"resource_id":%s,'
    '"resource_type":%s,"result":%s,"timestamp":%s}'
)


def canonical_timestamp(value: datetime | str) -> str:
    """ISO-8601 in UTC with microseconds, e.g. 2026-01-02T03:04:05.000006+00:00."""
    if isinstance(value, str):  # from an export file: already canonical
        return value
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")


def _refuse(value):
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


# The same encoding as _canonical, through one reusable C encoder: JSONEncoder.encode() builds a
# new one per call, which dominates verification time for small objects.
_c_encoder = (
    c_make_encoder(None, _refuse, encode_basestring_ascii, None, ":", ",", True, False, False)
    if c_make_encoder is not None
    else None
)


def encode_json(value) -> str:
    """Canonical JSON of a context or metadata value."""
    if _c_encoder is None:  # pragma: no cover - only on Pythons without the C accelerator
        return _canonical(value)
    return "".join(_c_encoder(value, 0))


def json_value(value) -> str:
    # Empty objects are the common case; skip the encoder for them.
    return "{}" if not value and isinstance(value, dict) else encode_json(value)


def _fill_template(
    *,
    id_text: str,
    previous_text: str,
    timestamp_text: str,
    event_id,
    event_type: str,
    action: str,
    result: str,
    resource_type: str,
    resource_id: str,
    actor_type: str,
    actor_id: str,
    actor_name: str,
    actor_ip: str,
    context,
    metadata,
) -> str:
    # The one place that knows TEMPLATE's slot order (its keys, sorted).
    return TEMPLATE % (
        _quote(action),
        _quote(actor_id),
        _quote(actor_ip),
        _quote(actor_name),
        _quote(actor_type),
        json_value(context),
        _quote(str(event_id)),
        _quote(event_type),
        id_text,
        json_value(metadata),
        previous_text,
        _quote(resource_id),
        _quote(resource_type),
        _quote(result),
        timestamp_text,
    )


def canonical_event(
    id: int,  # noqa: A002 - the event's own field name
    event_id,
    timestamp,
    previous_hash: str,
    **fields,
) -> bytes:
    """The canonical JSON (sorted keys, compact, ASCII) of every hashed field of an event."""
    text = _fill_template(
        id_text=str(int(id)),
        previous_text=_quote(previous_hash),
        timestamp_text=_quote(canonical_timestamp(timestamp)),
        event_id=event_id,
        **fields,
    )
    return text.encode("ascii")


# Stand-ins for the two values only known when an event is chained. NUL never survives JSON
# encoding (it becomes \u0000), so a marker cannot collide with any encoded value.
_ID, _PREVIOUS = "\x00id\x00", "\x00previous\x00"


def canonical_parts(*, timestamp, **fields) -> tuple[str, str, str]:
    """The canonical event split around its id and previous hash: (head, middle, tail) such that
    head + str(id) + middle + previous_hash + tail == canonical_event(...), as ASCII text.

    Computed when an event is recorded, so the chainer (Python or PostgreSQL) only concatenates
    and hashes; verification recomputes every hash from the stored columns, so both must agree.
    """
    text = _fill_template(
        id_text=_ID, previous_text=f'"{_PREVIOUS}"', timestamp_text=_quote(canonical_timestamp(timestamp)), **fields
    )
    head, rest = text.split(_ID)
    middle, tail = rest.split(_PREVIOUS)
    return head, middle, tail


def hash_parts(head: str, middle: str, tail: str, *, id: int, previous_hash: str) -> str:  # noqa: A002
    """SHA-256 (hex) of the canonical event assembled from its parts."""
    return hashlib.sha256(f"{head}{id}{middle}{previous_hash}{tail}".encode("ascii")).hexdigest()


def compute_hash(**fields) -> str:
    """SHA-256 (hex) over the canonical serialization of every field plus the previous hash."""
    return hashlib.sha256(canonical_event(**fields)).hexdigest()


class _NotPlainJSON(Exception):
    """A value that is not made only of dict (str keys), list, str, int, float, bool and None."""


def _normalize(value):
    # Exact types only: a str or int subclass (an enum, a lazy string) takes the JSON round trip.
    kind = type(value)
    if kind is str:
        return _normalize_str(value)
    if kind is dict:
        normalized = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotPlainJSON
            normalized[_normalize_str(key)] = _normalize(item)
        return normalized
    if kind is list:
        return [_normalize(item) for item in value]
    if kind is int or kind is bool or value is None:
        return value
    if kind is float:
        if not math.isfinite(value):
            raise ValueError("audit context and metadata cannot hold NaN or Infinity")
        # PostgreSQL's jsonb prints 1e+20 as 100000000000000000000 (an int when read back) and has
        # no -0.0, so integral floats are stored as ints: the hash covers what reads back.
        return int(value) if value.is_integer() else value
    raise _NotPlainJSON


_SURROGATE = re.compile("[\ud800-\udfff]")


def safe_text(value: str) -> str:
    """The string PostgreSQL stores and returns unchanged: NUL and lone surrogates become U+FFFD.

    Both come from hostile input (a JSON body can carry "\\u0000" or "\\ud800"); refused by the
    database, they would fail the action being audited, so they are replaced instead.
    """
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = _SURROGATE.sub("\ufffd", value)
    return value


_normalize_str = safe_text


def normalize_json(value) -> dict | list | str | int | float | bool | None:
    """A JSON value that reads back identically from SQLite and PostgreSQL jsonb (so hashes hold)."""
    if value is None:
        return {}
    try:
        # Plain JSON types (nearly every event's context): normalized as they are.
        return _normalize(value)
    except _NotPlainJSON:
        pass
    # UUIDs, datetimes and Decimals become strings, as they would in any JSON export; tuples lists.
    plain = json.loads(json.dumps(value, cls=DjangoJSONEncoder, allow_nan=False))
    return _normalize(plain)


def checkpoint_signature(*, key: str, event_id: int, event_hash: str, created: datetime) -> str:
    """HMAC-SHA256 binding a chain position to its hash and time, under a key kept out of the DB."""
    message = f"{event_id}|{event_hash}|{canonical_timestamp(created)}".encode("ascii")
    return hmac.new(key.encode("utf-8"), message, hashlib.sha256).hexdigest()


def export_header_signature(*, key: str, header: dict) -> str:
    """HMAC-SHA256 of an export's header record (every field but the signature), under the checkpoint key.

    The prefix keeps it apart from checkpoint signatures (whose messages start with a digit), so a
    signature of one kind can never pass as the other.
    """
    fields = {name: value for name, value in header.items() if name != "signature"}
    message = b"elsa-audit-export|" + _canonical(fields).encode("ascii")
    return hmac.new(key.encode("utf-8"), message, hashlib.sha256).hexdigest()
