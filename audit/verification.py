"""Chain verification: recompute every hash, check every link and every signed checkpoint."""

import hashlib
import hmac
import json
import multiprocessing
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from json.encoder import encode_basestring_ascii

from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import QuerySet
from django.utils import timezone

from audit.chain import (
    EVENT_COLUMNS,
    GENESIS_HASH,
    TEMPLATE,
    canonical_timestamp,
    checkpoint_signature,
    encode_json,
    export_header_signature,
    json_value,
)
from audit.models import AuditCheckpoint, AuditEvent

CHUNK_SIZE = 5000
# verify_chain(jobs=N) splits a chain of at least this many events into N segments verified by N
# processes at once; below it, starting the processes costs more than it saves.
PARALLEL_MIN_EVENTS = 50_000


_scan_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _parse_json(text: str):
    # PostgreSQL's jsonb text has no surrounding whitespace; the C scanner skips json.loads' wrapping.
    try:
        value, end = _scan_json(text, 0)
    except StopIteration as exc:
        raise ValueError("stored JSON is not valid") from exc
    if end != len(text):
        return json.loads(text)
    return value


@dataclass(frozen=True)
class VerificationResult:
    """The outcome of a verification: where it first failed (an event id) and why."""

    is_valid: bool
    first_invalid_id: int | None
    total_checked: int
    reason: str = ""
    head_id: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Anchors:
    """Signed checkpoints: the hash each names, and the event ids of forged (badly signed) ones."""

    hashes: dict[int, str]
    forged: frozenset[int]

    @property
    def highest(self) -> int:
        return max(self.hashes, default=0)

    def within(self, first: int, last: int) -> "Anchors":
        """The checkpoints naming events first..last (both included)."""
        return Anchors(
            hashes={k: v for k, v in self.hashes.items() if first <= k <= last},
            forged=frozenset(k for k in self.forged if first <= k <= last),
        )


def load_anchors(checkpoints: Iterable[tuple[int, str, datetime, str]], *, key: str | None = None) -> Anchors:
    """Check each checkpoint's HMAC; (event_id, event_hash, created, signature) tuples."""
    key = settings.ELSA_AUDIT_CHECKPOINT_KEY if key is None else key
    hashes: dict[int, str] = {}
    forged: set[int] = set()
    for event_id, event_hash, created, signature in checkpoints:
        expected = checkpoint_signature(key=key, event_id=event_id, event_hash=event_hash, created=created)
        # Constant-time compare: the signature is a MAC, never compared with ==.
        if hmac.compare_digest(expected, signature):
            hashes[event_id] = event_hash
        else:
            forged.add(event_id)
    return Anchors(hashes=hashes, forged=frozenset(forged))


def verify_rows(
    rows: Iterable[tuple],
    *,
    first_id: int = 1,
    anchor_hash: str | None = GENESIS_HASH,
    anchors: Anchors | None = None,
    must_reach: int = 0,
) -> VerificationResult:
    """Walk events in id order (tuples in EVENT_COLUMNS order) and report the first bad one.

    Each event must have the next id (a gap means a deleted event), link to the previous event's
    recomputed hash (anchor_hash for the first; None trusts the first event's stored link), hash
    to its stored hash when recomputed from its content, and match any signed checkpoint. Events
    up to `must_reach` must exist: a signed checkpoint beyond the last event means a cut tail.
    """
    anchors = anchors or Anchors(hashes={}, forged=frozenset())
    checkpoint_hashes = anchors.hashes
    forged = anchors.forged
    # The hot loop: audit.chain.canonical_event inlined, with local names (about 100,000 events/s).
    sha256, quote, template, loads = hashlib.sha256, encode_basestring_ascii, TEMPLATE, _parse_json
    expected_id = first_id
    previous = anchor_hash
    checked = 0
    for row in rows:
        (
            event_id,
            uuid,
            timestamp,
            event_type,
            action,
            result,
            resource_type,
            resource_id,
            actor_type,
            actor_id,
            actor_name,
            actor_ip,
            context,
            metadata,
            previous_hash,
            stored_hash,
        ) = row
        try:
            if event_id != expected_id:
                if event_id > expected_id:
                    reason = f"event #{expected_id} is missing (the chain continues at #{event_id})"
                else:
                    reason = f"event #{event_id} is out of order (expected #{expected_id})"
                return VerificationResult(False, expected_id, checked, reason)
            checked += 1
            if previous is not None and previous_hash != previous:
                return VerificationResult(
                    False, event_id, checked, f"event #{event_id} does not link to the hash of the event before it"
                )
            if type(timestamp) is not str:
                timestamp = canonical_timestamp(timestamp)
            # JSON arrives as None (empty, from PostgreSQL), text (PostgreSQL) or parsed (elsewhere).
            context = (
                "{}"
                if context is None
                else encode_json(loads(context))
                if type(context) is str
                else json_value(context)
            )
            metadata = (
                "{}"
                if metadata is None
                else encode_json(loads(metadata))
                if type(metadata) is str
                else json_value(metadata)
            )
            canonical = template % (
                quote(action),
                quote(actor_id),
                quote(actor_ip),
                quote(actor_name),
                quote(actor_type),
                context,
                quote(str(uuid)),
                quote(event_type),
                int(event_id),
                metadata,
                quote(previous_hash),
                quote(resource_id),
                quote(resource_type),
                quote(result),
                quote(timestamp),
            )
            digest = sha256(canonical.encode("ascii")).hexdigest()
        except (TypeError, ValueError, AttributeError):
            # Only an export file can hold values of the wrong type (the database enforces types).
            return VerificationResult(False, expected_id, checked, f"event #{expected_id} is malformed")
        if digest != stored_hash:
            return VerificationResult(False, event_id, checked, f"event #{event_id} does not match its hash")
        if event_id in checkpoint_hashes and checkpoint_hashes[event_id] != digest:
            return VerificationResult(False, event_id, checked, f"event #{event_id} differs from its signed checkpoint")
        if event_id in forged:
            return VerificationResult(
                False, event_id, checked, f"the checkpoint of event #{event_id} has an invalid signature"
            )
        previous = digest
        expected_id += 1
    last_id = expected_id - 1
    beyond = [event_id for event_id in forged if event_id > last_id]
    if beyond:
        reason = f"a checkpoint with an invalid signature names event #{min(beyond)}, beyond the last event"
        return VerificationResult(False, min(beyond), checked, reason, head_id=last_id or None)
    if must_reach > last_id:
        reason = f"event #{expected_id} is missing (a signed checkpoint names event #{must_reach})"
        return VerificationResult(False, expected_id, checked, reason, head_id=last_id or None)
    return VerificationResult(True, None, checked, "", head_id=last_id or None)


# PostgreSQL formats the uuid and the timestamp (exactly as audit.chain.canonical_timestamp does)
# and leaves empty JSON objects as NULL, so the verifier parses no dates, UUIDs or empty JSON
# (other JSON arrives as text: the verifier parses it and re-encodes it canonically).
_PG_ROWS = """
SELECT id, event_id::text,
       to_char(timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || '+00:00',
       event_type, action, result, resource_type, resource_id,
       actor_type, actor_id, actor_name, actor_ip,
       CASE WHEN context = '{}'::jsonb THEN NULL ELSE context::text END,
       CASE WHEN metadata = '{}'::jsonb THEN NULL ELSE metadata::text END,
       previous_hash, hash
FROM audit_auditevent
WHERE id >= %s AND id <= %s
ORDER BY id
"""
_NO_UPPER_BOUND = 2**63 - 1


def _pg_event_rows(first_id: int, last_id: int):
    # A server-side cursor (DECLARE ... CURSOR): constant memory however long the chain is.
    with transaction.atomic(), connection.chunked_cursor() as cursor:
        cursor.execute(_PG_ROWS, [first_id, last_id])
        yield from _prefetched(cursor)


def _prefetched(cursor):
    """Rows of `cursor`, the next chunk fetched by a thread while this one is hashed.

    The server formats rows while Python hashes: on two cores that overlap is most of the speed.
    psycopg releases the GIL while it waits for the server, and only this thread touches the cursor
    until the generator ends (it waits for the fetcher to stop before the cursor is closed).
    """
    chunks: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def fetch():
        try:
            while not stop.is_set():
                rows = cursor.fetchmany(CHUNK_SIZE)
                _put(rows)
                if not rows:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            _put(exc)

    def _put(item):
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    fetcher = threading.Thread(target=fetch, name="audit-verify-fetch", daemon=True)
    fetcher.start()
    try:
        while True:
            item = chunks.get()
            if isinstance(item, BaseException):
                raise item
            if not item:
                return
            yield from item
    finally:
        stop.set()
        fetcher.join()


def _portable_event_rows(first_id: int, last_id: int):
    # values_list + .iterator(): a server-side cursor where the database has one, no model instances.
    queryset = AuditEvent.objects.filter(id__gte=first_id, id__lte=last_id).order_by("id")
    return queryset.values_list(*EVENT_COLUMNS).iterator(chunk_size=CHUNK_SIZE)


def _event_rows(first_id: int = 1, last_id: int = _NO_UPPER_BOUND):
    if connection.vendor == "postgresql":
        return _pg_event_rows(first_id, last_id)
    return _portable_event_rows(first_id, last_id)


def _db_anchors(**filters) -> Anchors:
    return load_anchors(
        AuditCheckpoint.objects.filter(**filters).values_list("event_id", "event_hash", "created", "signature")
    )


# The event purge_audit records (audit.services.audit_purge): its context names the last purged
# event and that event's hash, the purge anchor the stored chain then starts from.
PURGE_EVENT_TYPE = "audit.purged"


@dataclass(frozen=True)
class ChainStart:
    """Where the stored chain starts: its first event, the hash that event must link to, or why it cannot."""

    first_id: int
    anchor_hash: str
    failure: VerificationResult | None = None

    @property
    def purged_through(self) -> int:
        """The last purged event (0 when nothing was purged, or the head is not a valid purge anchor)."""
        return self.first_id - 1 if self.failure is None else 0


def chain_start(anchors: Anchors | None = None) -> ChainStart:
    """Genesis (event #1, linked to 64 zeros), or after purge_audit the purge anchor.

    When the oldest stored event is #F > 1, events #1 to #F-1 were purged only if a validly signed
    checkpoint names event #F-1 (the anchor), #F links to the hash it signs, and an audit.purged event
    of the stored chain records the purge through that event and hash. Otherwise the head was cut or
    wiped, and the failure names #F. `anchors`: every signed checkpoint, if the caller has them.
    """
    first = AuditEvent.objects.order_by("id").values_list("id", "previous_hash").first()
    if first is None or first[0] <= 1:
        return ChainStart(1, GENESIS_HASH)
    first_id, link = first
    through = first_id - 1
    if anchors is None:
        anchors = _db_anchors(event_id=through)

    def failure(reason: str) -> ChainStart:
        return ChainStart(first_id, link, VerificationResult(False, first_id, 0, reason))

    if through in anchors.forged:
        return failure(f"the purge anchor, the checkpoint of event #{through}, has an invalid signature")
    anchor = anchors.hashes.get(through)
    if anchor is None:
        return failure(
            f"event #{first_id} is the oldest stored event, but no signed checkpoint names event #{through} "
            "(events before it are missing, not purged)"
        )
    if link != anchor:
        return failure(f"event #{first_id} does not link to the signed checkpoint of event #{through} (purge anchor)")
    purges = AuditEvent.objects.filter(event_type=PURGE_EVENT_TYPE, id__gt=through).values_list("context", flat=True)
    if not any(
        isinstance(context, dict) and context.get("through_id") == through and context.get("through_hash") == anchor
        for context in purges
    ):
        return failure(
            f"no {PURGE_EVENT_TYPE} event records a purge through event #{through} "
            f"(events before #{first_id} are missing, not purged)"
        )
    return ChainStart(first_id, anchor)


def signed_checkpoint_reaches(event_id: int) -> bool:
    """Whether a validly signed checkpoint names this event or a later one: the chain reached it."""
    return _db_anchors(event_id__gte=event_id).highest >= event_id


@dataclass(frozen=True)
class UnsignedPeriod:
    """A stretch longer than the allowed checkpoint age in which no validly signed checkpoint was made.

    It runs from a checkpoint (or, before the first one, from the oldest stored event) to the next
    checkpoint. Events chained in it could have been cut, with the checkpoints after them, before
    the beat signed the chain again: the beat was stopped, or the tail was cut.
    """

    start: datetime
    start_event_id: int
    start_is_checkpoint: bool
    end: datetime
    end_event_id: int

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def __str__(self) -> str:
        since = "the checkpoint of" if self.start_is_checkpoint else "the oldest stored event,"
        return (
            f"no signed checkpoint from {canonical_timestamp(self.start)} ({since} event #{self.start_event_id}) "
            f"to {canonical_timestamp(self.end)} (a checkpoint of event #{self.end_event_id}), {self.seconds:.0f}s"
        )


@dataclass(frozen=True)
class Freshness:
    """Whether a validly signed checkpoint is recent enough that the chain's tail cannot have been cut
    unseen, and (history=True) the unsigned periods before it, oldest first."""

    is_fresh: bool
    newest_event_id: int | None = None
    newest_created: datetime | None = None
    reason: str = ""
    unsigned_periods: tuple[UnsignedPeriod, ...] = ()


def _valid_checkpoint_times(checkpoints: QuerySet, *, chunk_size: int = CHUNK_SIZE) -> Iterator[tuple[datetime, int]]:
    """(created, event id) of each validly signed checkpoint, in the queryset's order."""
    key = settings.ELSA_AUDIT_CHECKPOINT_KEY
    rows = checkpoints.values_list("event_id", "event_hash", "created", "signature").iterator(chunk_size=chunk_size)
    for event_id, event_hash, created, signature in rows:
        expected = checkpoint_signature(key=key, event_id=event_id, event_hash=event_hash, created=created)
        # Constant-time compare: the signature is a MAC, never compared with ==.
        if hmac.compare_digest(expected, signature):
            yield created, event_id


def _nearest_signed(checkpoints: QuerySet) -> int | None:
    """The event id of the first validly signed checkpoint in the queryset's order (forged ones are passed over)."""
    # Small chunks: nearly always the first row is the one.
    return next((event_id for _, event_id in _valid_checkpoint_times(checkpoints, chunk_size=16)), None)


def chain_freshness(*, max_age: float | None = None, history: bool = False) -> Freshness:
    """Whether the newest validly signed checkpoint is at most `max_age` seconds old (default
    ELSA_AUDIT_CHECKPOINT_MAX_AGE_SECONDS); without any, whether the oldest stored event is.

    The beat signs the head at least once per interval, moved or not, and a signature covers its
    time: a tail cut back to an old checkpoint, with the checkpoints after it deleted, leaves the
    newest one too old, which no database write can hide. Once the beat signs the cut chain again,
    the gap stays in the signed times: with history=True every earlier unsigned period longer than
    `max_age` is listed too (reading every checkpoint). Signatures are checked here; whether each
    checkpoint matches the chain is verify_chain's part. An empty chain without checkpoints is fresh.
    """
    max_age = settings.ELSA_AUDIT_CHECKPOINT_MAX_AGE_SECONDS if max_age is None else max_age
    now = timezone.now()
    oldest = AuditEvent.objects.order_by("id").values_list("timestamp", "id").first()
    periods: list[UnsignedPeriod] = []
    # The point the current unsigned stretch started at: (time, event id, is it a checkpoint).
    last: tuple[datetime, int, bool] | None = None
    if history:
        for created, event_id in _valid_checkpoint_times(AuditCheckpoint.objects.order_by("created", "id")):
            if last is None and oldest is not None and oldest[0] < created:
                # The stored chain started unsigned (a purge keeps older checkpoints, which come first).
                last = (oldest[0], oldest[1], False)
            if last is not None and (created - last[0]).total_seconds() > max_age:
                periods.append(UnsignedPeriod(last[0], last[1], last[2], created, event_id))
            last = (created, event_id, True)
    else:
        newest = next(_valid_checkpoint_times(AuditCheckpoint.objects.order_by("-created", "-id")), None)
        if newest is not None:
            last = (newest[0], newest[1], True)
    if last is None and oldest is not None:
        last = (oldest[0], oldest[1], False)
    if last is None:
        return Freshness(True, unsigned_periods=tuple(periods))
    moment, event_id, signed = last
    newest_event_id, newest_created = (event_id, moment) if signed else (None, None)
    age = (now - moment).total_seconds()
    if age <= max_age:
        return Freshness(True, newest_event_id, newest_created, "", tuple(periods))
    if signed:
        reason = (
            f"the newest signed checkpoint (of event #{event_id}, signed {canonical_timestamp(moment)}) is {age:.0f}s "
            f"old, more than the allowed {max_age:g}s: events chained after it may have been cut, with the "
            "checkpoints after it, or the audit.checkpoint beat has not run since"
        )
    else:
        reason = (
            f"no signed checkpoint covers the chain, and its oldest stored event (#{event_id}, recorded "
            f"{canonical_timestamp(moment)}) is {age:.0f}s old, more than the allowed {max_age:g}s: its "
            "checkpoints may have been deleted and its tail cut, or the audit.checkpoint beat has never run"
        )
    return Freshness(False, newest_event_id, newest_created, reason, tuple(periods))


def default_jobs() -> int:
    """The processes verify_audit_chain uses by default: the CPUs this process may run on, at most 4."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


def verify_chain(*, jobs: int = 1, parallel_min_events: int = PARALLEL_MIN_EVENTS) -> VerificationResult:
    """Verify the whole chain, from genesis (or the purge anchor) to the head, against every signed checkpoint.

    With jobs > 1, on PostgreSQL and outside a transaction (the processes read committed rows), a
    chain of at least `parallel_min_events` events is verified in `jobs` segments at once, each by
    a process of its own (see _verify_in_segments); the result is the one a single pass gives.
    """
    anchors = _db_anchors()
    start = chain_start(anchors)
    if start.failure is not None:
        return start.failure
    if jobs > 1 and connection.vendor == "postgresql" and not connection.in_atomic_block:
        starts = _segment_starts(jobs, parallel_min_events, first_id=start.first_id)
        if len(starts) > 1:
            return _verify_in_segments(starts, anchors, start.anchor_hash)
    # closing(): stop the server-side cursor (and its fetch thread) as soon as a bad event is found.
    with closing(_event_rows(start.first_id)) as rows:
        return verify_rows(
            rows, first_id=start.first_id, anchor_hash=start.anchor_hash, anchors=anchors, must_reach=anchors.highest
        )


def _segment_starts(jobs: int, min_events: int, *, first_id: int = 1) -> list[int]:
    """The chain's first event, then the first stored event at or after each further 1/jobs of the id range."""
    head = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    length = head - first_id + 1
    if length < max(min_events, jobs):
        return [first_id]
    starts = [first_id]
    for k in range(1, jobs):
        stored = AuditEvent.objects.filter(id__gte=first_id + k * length // jobs).order_by("id")
        found = stored.values_list("id", flat=True).first()
        if found is not None and found > starts[-1]:
            starts.append(found)
    return starts


def _verify_in_segments(starts: list[int], anchors: Anchors, anchor_hash: str) -> VerificationResult:
    """Verify consecutive segments at once, one process each, and combine them as one pass would.

    Segment k runs from its start through the first event of segment k+1, which both check: so
    every link is checked once by the segment holding the event it points to, a gap before a
    segment's first event is seen by the segment before it, and each event's hash is recomputed.
    Segment k+1 takes its first event's stored link as is (its predecessor is checked by segment
    k); the first segment's is checked against `anchor_hash` (genesis or the purge anchor). The first
    failing segment, in chain order, names the first bad event (the others still run to their end). Only
    the last segment checks the chain's end (a cut tail, checkpoints beyond it).
    """
    segments = []
    for k, first in enumerate(starts):
        final = k + 1 == len(starts)
        last = _NO_UPPER_BOUND if final else starts[k + 1]
        link = anchor_hash if k == 0 else None
        segments.append((first, last, anchors.within(first, last), anchors.highest if final else 0, link))
    # The processes are forked from this one: none may share its database connection.
    connections.close_all()
    # Every segment runs to its end (each stops at its own first bad event), then the pool is closed
    # and joined: Pool.terminate(), which leaving a `with Pool` block early calls, can kill a worker
    # holding the task queue's lock and hang the parent (seen once in CI, for minutes).
    pool = multiprocessing.get_context("fork").Pool(len(segments))
    try:
        results = list(pool.imap(_verify_segment, segments))
    finally:
        pool.close()
        pool.join()
    total = 0
    for k, result in enumerate(results):
        if not result.is_valid:
            return replace(result, total_checked=total + result.total_checked)
        final = k == len(segments) - 1
        # A segment's last event is the next segment's first: count it once.
        total += result.total_checked if final else result.total_checked - 1
    return VerificationResult(True, None, total, "", head_id=results[-1].head_id)


def _verify_segment(segment: tuple[int, int, Anchors, int, str | None]) -> VerificationResult:
    first, last, anchors, must_reach, anchor_hash = segment
    try:
        with closing(_event_rows(first, last)) as rows:
            return verify_rows(rows, first_id=first, anchor_hash=anchor_hash, anchors=anchors, must_reach=must_reach)
    finally:
        connection.close()  # this process's own connection, opened for this segment


def verify_event(event_id: int) -> VerificationResult:
    """Verify the segment holding one event: from the last signed checkpoint at or before it
    (or genesis, or the purge anchor) through the first signed checkpoint after it (or the event itself).

    An event before the purge anchor is not in the database (see purge_audit): its archive verifies it.
    """
    # Only the checkpoints around the event are read (the beat adds one per interval, for years).
    checkpoints = AuditCheckpoint.objects.all()
    start = _nearest_signed(checkpoints.filter(event_id__lte=event_id).order_by("-event_id", "-id")) or 1
    end = _nearest_signed(checkpoints.filter(event_id__gt=event_id).order_by("event_id", "id")) or event_id
    # From a checkpoint, the first event's stored link is taken as is: the checkpoint's signed
    # hash of that event proves its content, and through its hash its link.
    anchor_hash = GENESIS_HASH if start == 1 else None
    chain = chain_start()
    if start < chain.first_id:
        # The segment reaches the stored chain's start: it must be genesis or a valid purge anchor.
        if chain.failure is not None:
            return chain.failure
        if event_id < chain.first_id:
            return VerificationResult(False, None, 0, f"event #{event_id} was purged: verify it in its archive")
        start, anchor_hash = chain.first_id, chain.anchor_hash
    segment = _db_anchors(event_id__gte=start, event_id__lte=end)
    with closing(_event_rows(start, end)) as rows:
        return verify_rows(rows, first_id=start, anchor_hash=anchor_hash, anchors=segment, must_reach=end)


# An export file (see export_audit): a signed header, the events, then the signed checkpoints.
EXPORT_FORMAT = 1
_HEADER_FIELDS = {
    "record": str,
    "format": int,
    "since": str,
    "created": str,
    "first_id": (int, type(None)),
    "first_previous_hash": (str, type(None)),
    "last_id": (int, type(None)),
    "last_hash": (str, type(None)),
    "signature": str,
}
_CHECKPOINT_FIELDS = {"record": str, "event_id": int, "event_hash": str, "created": str, "signature": str}


class _BadLine(Exception):
    """A line of an export file that is not a record export_audit writes."""

    def __init__(self, number: int, reason: str, event_id: int | None = None):
        super().__init__(reason)
        self.number, self.reason, self.event_id = number, reason, event_id


def _well_typed(record: dict, fields: dict) -> str | None:
    """The first field of `record` that is missing or of the wrong type (bool is no int), or None."""
    for name, types in fields.items():
        if name not in record:
            return f"lacks {name!r}"
        value = record[name]
        if isinstance(value, bool) or not isinstance(value, types):
            return f"has a {name!r} of the wrong type"
        # Signatures, hashes and timestamps are ASCII; the HMAC code takes nothing else.
        if isinstance(value, str) and not value.isascii():
            return f"has a non-ASCII {name!r}"
    return None


def _export_records(path):
    """(line number, kind, record) of each record of the file, read line by line; _BadLine for a bad one."""
    with open(path, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except ValueError:  # UnicodeDecodeError and JSONDecodeError alike
                raise _BadLine(number, "not a JSON line") from None
            if not isinstance(record, dict):
                raise _BadLine(number, "not a JSON object")
            if "record" not in record:
                kind = "event"
                event_id = record.get("id") if type(record.get("id")) is int else None
                missing = next((column for column in EVENT_COLUMNS if column not in record), None)
                if missing is not None:
                    raise _BadLine(number, f"the event lacks {missing!r}", event_id)
                # Exports hold JSON values, never JSON text: a string here was not written by export_audit.
                if isinstance(record["context"], str) or isinstance(record["metadata"], str):
                    raise _BadLine(number, "the event's context or metadata is JSON text", event_id)
            elif record["record"] in ("header", "checkpoint"):
                kind = record["record"]
                problem = _well_typed(record, _HEADER_FIELDS if kind == "header" else _CHECKPOINT_FIELDS)
                if problem:
                    raise _BadLine(number, f"the {kind} record {problem}")
            else:
                raise _BadLine(number, "not an event, header or checkpoint record")
            yield number, kind, record


def verify_export(path, *, key: str | None = None) -> VerificationResult:
    """Verify a JSON Lines export (see export_audit) offline, reading the file twice, line by line.

    The first pass reads the signed header and the checkpoints; the second streams the events
    through verify_rows. The header's signature binds the file to a run of the chain: its events
    must start at the header's first id, linked to the header's previous hash, and end at its last
    id with its last hash (the export's own signed checkpoint), so a cut head or tail, an emptied
    file and a rewritten run (with or without its checkpoint lines) all fail. Every signed
    checkpoint must name an event of the file.
    """
    key = settings.ELSA_AUDIT_CHECKPOINT_KEY if key is None else key
    header: dict | None = None
    checkpoints: list[tuple] = []
    events = 0
    try:
        for number, kind, record in _export_records(path):
            if kind == "header":
                if header is not None or events or checkpoints:
                    raise _BadLine(number, "an export header that is not the file's first record")
                header = record
            elif header is None:
                raise _BadLine(number, "the file does not start with a signed export header")
            elif kind == "checkpoint":
                checkpoints.append((record["event_id"], record["event_hash"], record["created"], record["signature"]))
            else:
                events += 1
        if header is None:
            return VerificationResult(False, None, 0, "the file holds no signed export header")
        if header["format"] != EXPORT_FORMAT:
            return VerificationResult(False, None, 0, f"export format {header['format']} is not known")
        expected = export_header_signature(key=key, header=header)
        # Constant-time compare: the signature is a MAC, never compared with ==.
        if not hmac.compare_digest(expected, header["signature"]):
            return VerificationResult(False, None, 0, "the export header has an invalid signature")
        return _verify_export_events(path, header, load_anchors(checkpoints, key=key), events)
    except _BadLine as bad:
        return VerificationResult(False, bad.event_id, 0, f"line {bad.number}: {bad.reason}")


def _verify_export_events(path, header: dict, anchors: Anchors, events: int) -> VerificationResult:
    first, last = header["first_id"], header["last_id"]
    if first is None or last is None:
        if events or anchors.hashes or anchors.forged:
            return VerificationResult(False, None, 0, "the export header says the file holds no events")
        return VerificationResult(True, None, 0, "no events in the export")
    outside = sorted(k for k in (*anchors.hashes, *anchors.forged) if not first <= k <= last)
    if outside:
        reason = f"a checkpoint names event #{outside[0]}, outside the export's events #{first} to #{last}"
        return VerificationResult(False, outside[0], 0, reason)
    end_hash = []

    def rows():
        for _, kind, record in _export_records(path):
            if kind == "event":
                if record["id"] == last:
                    end_hash.append(record["hash"])
                yield tuple(record[column] for column in EVENT_COLUMNS)

    result = verify_rows(
        rows(), first_id=first, anchor_hash=header["first_previous_hash"], anchors=anchors, must_reach=last
    )
    if not result.is_valid:
        return result
    if result.head_id != last:
        reason = f"event #{last + 1} is beyond the export's last event (#{last})"
        return replace(result, is_valid=False, first_invalid_id=last + 1, reason=reason)
    if end_hash != [header["last_hash"]]:
        reason = f"event #{last} does not match the hash the export header signs (events before it were rewritten)"
        return replace(result, is_valid=False, first_invalid_id=last, reason=reason)
    return result


def export_event_hash(path, event_id: int) -> tuple[dict | None, str | None]:
    """The header of an export file and the hash it holds for event `event_id` (None if it holds no such event).

    For a file verify_export has verified: it reads the file once more, line by line.
    """
    header, found = None, None
    for _, kind, record in _export_records(path):
        if kind == "header" and header is None:
            header = record
        elif kind == "event" and record["id"] == event_id:
            found = record["hash"]
    return header, found
