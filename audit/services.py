"""Writes of the audit app: record an event, chain pending events, record a signed checkpoint."""

import functools
import ipaddress
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audit.actors import Actor
from audit.chain import (
    EVENT_COLUMNS,
    GENESIS_HASH,
    canonical_parts,
    canonical_timestamp,
    checkpoint_signature,
    hash_parts,
    json_value,
    normalize_json,
    safe_text,
)
from audit.chainer import chainer
from audit.models import AuditCheckpoint, AuditEvent, PendingAuditEvent
from audit.verification import PURGE_EVENT_TYPE, load_anchors
from elsa_site.db import execute_bound, parameter
from elsa_site.errors import InvalidInput

logger = logging.getLogger("elsa.audit")

# Key of the PostgreSQL advisory lock that serializes chaining ("elsaaudt" as a 64-bit integer).
CHAIN_LOCK_KEY = 0x656C736161756474

# Pending events chained per statement batch by the sealer.
SEAL_BATCH = 1000

_RESULTS = frozenset(AuditEvent.Result.values)
_ACTOR_TYPES = frozenset(AuditEvent.ActorType.values)

# A chained event's columns (EVENT_COLUMNS: id, the payload, previous_hash, hash); the payload is
# what a pending event shares with its chained copy, next to the canonical text around id and link.
_CHAINED = EVENT_COLUMNS
_PAYLOAD = EVENT_COLUMNS[1:-2]
_PARTS = ("canonical_head", "canonical_middle", "canonical_tail")
_PENDING = (*_PAYLOAD, *_PARTS)
assert _CHAINED == ("id", *_PAYLOAD, "previous_hash", "hash")


def _lock_chain() -> None:
    """Take the chain lock for the rest of the current transaction, so chaining never forks.

    PostgreSQL: a transaction-level advisory lock, held until that transaction commits or rolls
    back. The next chainer gets it only after that commit, and in READ COMMITTED its next
    statement (the head read) sees the committed head. This serializes chainers across processes
    and hosts sharing the database (audit_chain_pending() takes the same lock).

    SQLite: the settings open every transaction with BEGIN IMMEDIATE, which already takes the
    database's single write lock before the head is read, so chainers are serialized there too.

    Either way, the unique primary key (head + 1) and unique previous_hash make a fork impossible
    to commit even if this lock were bypassed: the second chainer would fail, never fork.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_KEY])


def _chain_head() -> tuple[int, str]:
    head = AuditEvent.objects.order_by("-id").values_list("id", "hash").first()
    return head if head is not None else (0, GENESIS_HASH)


def _clip(value, limit: int) -> str:
    # Identifiers can come from clients (a login name): a long or undecodable one is cut or
    # repaired, never allowed to fail the action.
    return safe_text(str(value or ""))[:limit]


def _normalized_ip(ip: str | None) -> str:
    if not ip:
        return ""
    try:
        return str(ipaddress.ip_address(str(ip).strip()))
    except ValueError:
        return ""


def _event_fields(
    *,
    event_type: str,
    action: str,
    result: str = AuditEvent.Result.SUCCESS,
    resource: tuple[str, str] | None = None,
    actor: Actor,
    context: dict | None = None,
    metadata: dict | None = None,
) -> dict:
    """The validated, normalized payload of one event (every column but id and the hashes)."""
    if not event_type or not action:
        raise InvalidInput("An audit event needs an event_type and an action.")
    if result not in _RESULTS:
        raise InvalidInput(f"Audit result must be one of {sorted(_RESULTS)}.")
    if actor is None or actor.type not in _ACTOR_TYPES:
        raise InvalidInput(f"Audit actor type must be one of {sorted(_ACTOR_TYPES)}.")
    resource_type, resource_id = ("", "") if resource is None else resource
    try:
        context_value = normalize_json(context)
        metadata_value = normalize_json(metadata)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("Audit context and metadata must be JSON-serializable.") from exc
    return {
        "event_id": uuid.uuid4(),
        "timestamp": timezone.now(),
        "event_type": _clip(event_type, 100),
        "action": _clip(action, 100),
        "result": str(result),
        "resource_type": _clip(resource_type, 64),
        "resource_id": _clip(resource_id, 255),
        "actor_type": actor.type,
        "actor_id": _clip(actor.id, 255),
        "actor_name": _clip(actor.name, 255),
        "actor_ip": _normalized_ip(actor.ip),
        "context": context_value,
        "metadata": metadata_value,
    }


def _insert_sql(model, columns: tuple[str, ...]) -> tuple[str, list]:
    """An INSERT of `columns` into `model`'s table and the fields that prepare each value."""
    fields = [model._meta.get_field(name) for name in columns]
    quote = connection.ops.quote_name
    # Identifiers come from the model's metadata and are quoted; every value is a bound parameter.
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    return sql, fields


def _prepared(fields: list, values: dict) -> list:
    # Each field prepares its value for this database (uuid, timestamp, jsonb), as the ORM would.
    return [field.get_db_prep_save(values[field.name], connection) for field in fields]


def _with_parts(values: dict) -> dict:
    head, middle, tail = canonical_parts(**values)
    return {**values, "canonical_head": head, "canonical_middle": middle, "canonical_tail": tail}


_JSON_COLUMNS = ("context", "metadata")
# In the fenced form below a parameter takes its type from its value, not from the column it fills:
# elsa_site.db.parameter() casts the non-text ones.
_PG_ROW = "(" + ", ".join(parameter(PendingAuditEvent, name) for name in _PENDING) + ")"


@functools.cache
def _pg_insert_pending(count: int, after: str | None = None) -> str:
    """The INSERT of `count` pending events, fixed per shape so it can be prepared.

    With `after` (a CTE of the same statement), the events are inserted only if it returns a row.
    Built from constant column names only; every value is a bound parameter.
    """
    head = f"INSERT INTO audit_pendingauditevent ({', '.join(_PENDING)}) "  # noqa: S608
    rows = ", ".join([_PG_ROW] * count)
    if after is None:
        return f"{head}VALUES {rows}"
    if not after.isidentifier():
        raise ValueError(f"not a CTE name: {after!r}")
    return f"{head}SELECT * FROM (VALUES {rows}) AS pending WHERE EXISTS (SELECT FROM {after})"  # noqa: S608


def _pg_params(values: dict) -> list:
    # psycopg binds uuid, timestamptz and text natively; JSON travels as text cast to jsonb.
    return [json_value(values[name]) if name in _JSON_COLUMNS else values[name] for name in _PENDING]


def _insert_pending(values: dict, db) -> None:
    if db.vendor == "postgresql":
        # Prepared once per connection and run through elsa_site.db.execute_bound: Django's cursor
        # wrapper, client-side quoting and per-field preparation cost more CPU than the insert
        # itself, for every audited action.
        execute_bound(_pg_insert_pending(1), _pg_params(values), prepare=True, using=db.alias)
        return
    sql, fields = _insert_sql(PendingAuditEvent, _PENDING)
    with connection.cursor() as cursor:
        cursor.execute(sql, _prepared(fields, values))


def _append_chained(events: list[dict], head: tuple[int, str]) -> list[dict]:
    """Give each event (payload and canonical parts) the next id, link and hash after `head`, and
    insert them; the chain lock is held."""
    head_id, previous = head
    chained = []
    for values in events:
        head_id += 1
        digest = hash_parts(
            values["canonical_head"],
            values["canonical_middle"],
            values["canonical_tail"],
            id=head_id,
            previous_hash=previous,
        )
        chained.append({**values, "id": head_id, "previous_hash": previous, "hash": digest})
        previous = digest
    sql, fields = _insert_sql(AuditEvent, _CHAINED)
    with connection.cursor() as cursor:
        cursor.executemany(sql, [_prepared(fields, record) for record in chained])
    return chained


def _chain_pending_portable() -> int:
    """SQLite: what audit_chain_pending() does on PostgreSQL; the chain lock is held."""
    total = 0
    table = connection.ops.quote_name(PendingAuditEvent._meta.db_table)
    while True:
        batch = list(PendingAuditEvent.objects.order_by("id").values_list("id", *_PENDING)[:SEAL_BATCH])
        if not batch:
            return total
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # As audit_chain_pending() does: the pending table's trigger refuses other deletes.
                cursor.execute("SELECT set_config('elsa.audit_chaining', 'on', true)")
            placeholders = ", ".join(["%s"] * len(batch))  # the ids are bound parameters
            cursor.execute(f"DELETE FROM {table} WHERE id IN ({placeholders})", [row[0] for row in batch])  # noqa: S608
            if connection.vendor == "postgresql":
                cursor.execute("SELECT set_config('elsa.audit_chaining', 'off', true)")
        _append_chained([dict(zip(_PENDING, row[1:], strict=True)) for row in batch], _chain_head())
        total += len(batch)
        if len(batch) < SEAL_BATCH:
            return total


def audit_seal(*, flush: bool = True) -> int:
    """Chain every pending event committed so far; returns how many were chained.

    Waits for the chain lock (at most ELSA_AUDIT_SEAL_LOCK_TIMEOUT_MS), so when it returns, every
    event committed before the call is in the chain, chained by this call or by the chainer that
    held the lock. Safe to run anywhere, any number of times, concurrently. On PostgreSQL it is one
    statement (function audit_chain_pending of migration 0002): one round trip, one transaction
    when called outside one, and an empty pending table costs almost nothing.

    flush=False (the chainer thread and the sweep, outside any transaction): the chaining commit
    does not wait for its WAL flush, so the chain lock is held for microseconds rather than a disk
    flush. Nothing can be lost by it: the pending events were committed durably by their own
    transactions, and a crash that loses an unflushed chaining also loses its deletes of them, so
    they are chained again on recovery (only ids assigned in the last moments before a crash can
    change). Within a transaction the caller's commit decides, and flush is ignored.
    """
    timeout_ms = settings.ELSA_AUDIT_SEAL_LOCK_TIMEOUT_MS
    if connection.vendor == "postgresql":
        flush = flush or connection.in_atomic_block
        _, row = execute_bound(
            "SELECT audit_chain_pending(%s, %s, %s, %s)", [CHAIN_LOCK_KEY, timeout_ms, SEAL_BATCH, flush]
        )
        assert row is not None  # the function returns one row
        return row[0]
    with transaction.atomic():
        _lock_chain()
        return _chain_pending_portable()


def _seal_after_commit() -> None:
    # The process's chainer thread chains them (audit.chainer), off this request or task.
    chainer.notify()


def _schedule_seal(db) -> None:
    # One hook per transaction, however many events it records (a rolled-back savepoint drops
    # its hooks, and a later event registers a new one).
    if any(func is _seal_after_commit for _, func, _ in db.run_on_commit):
        return
    db.on_commit(_seal_after_commit)


def audit_record(
    *,
    event_type: str,
    action: str,
    result: str = AuditEvent.Result.SUCCESS,
    resource: tuple[str, str] | None = None,
    actor: Actor,
    context: dict | None = None,
    metadata: dict | None = None,
) -> None:
    """Record one event inside the caller's transaction (fail closed); it is chained after commit.

    Call it within the same `transaction.atomic()` as the state change it records: if the change
    rolls back, the event goes with it; if the event cannot be written, this raises and the change
    rolls back. Never pass secrets, tokens or request bodies in context or metadata.

    The event is written as pending, with no lock, so concurrent transactions never wait on the
    chain; right after commit this process chains it (audit_seal), before the caller's request or
    task returns. Invalid arguments raise InvalidInput before any database work.
    """
    values = _event_fields(
        event_type=event_type,
        action=action,
        result=result,
        resource=resource,
        actor=actor,
        context=context,
        metadata=metadata,
    )
    values = _with_parts(values)
    db = transaction.get_connection()
    if not db.in_atomic_block:
        with transaction.atomic(using=db.alias):  # an event of its own
            _insert_pending(values, db)
            _schedule_seal(db)
        return
    try:
        _insert_pending(values, db)
    except BaseException:
        # What atomic(savepoint=False) would do, without its bookkeeping on every event: a failed
        # insert dooms the caller's whole transaction (fail closed: the caller cannot catch the
        # error and commit its change without the event).
        db.set_rollback(True)
        raise
    _schedule_seal(db)


def audit_pending_insert(events: Sequence[Mapping[str, Any]], *, after: str | None = None) -> tuple[str, list]:
    """PostgreSQL: an INSERT recording `events` as pending, for a statement of the caller's, and its parameters.

    Each event is given as audit_record's keyword arguments and is validated and normalized as
    audit_record does it (InvalidInput before any database work). The text is fixed per number of
    events and `after`, so it can be prepared. It is meant as the main statement of a WITH whose
    CTEs make the change being recorded; with after=<name of one of them> (a fenced UPDATE ...
    RETURNING, say) the events are inserted only if that CTE returns a row. Run the whole
    statement with audit_pending_execute(), inside the change's transaction: the change and its
    events then succeed or fail together.
    """
    if not events:
        raise ValueError("audit_pending_insert needs at least one event")
    params: list = []
    for event in events:
        params += _pg_params(_with_parts(_event_fields(**event)))
    return _pg_insert_pending(len(events), after), params


def audit_pending_execute(sql: str, params: list) -> tuple[int, tuple | None]:
    """Run a statement holding audit_pending_insert()'s INSERT, as audit_record runs its own.

    Returns the statement's row count and first row (elsa_site.db.execute_bound, prepared). The
    INSERT may be the main statement or a CTE of one that returns something else. A failure dooms
    the caller's transaction, as in audit_record (fail closed); after success the events, if any
    were inserted, are chained after commit.
    """
    db = transaction.get_connection()
    try:
        result = execute_bound(sql, params, prepare=True, using=db.alias)
    except BaseException:
        if db.in_atomic_block:
            db.set_rollback(True)
        raise
    _schedule_seal(db)  # a pass that finds nothing (a fenced INSERT that inserted none) costs little
    return result


@transaction.atomic
def audit_checkpoint_create(*, actor: Actor | None = None) -> AuditCheckpoint | None:
    """Sign the current chain head, moved or not (a heartbeat); None for an empty chain.

    Under the chain lock it chains what is pending, then appends an `audit.checkpoint` event and
    signs that event (the new head). When the head has not moved (it is the newest checkpoint's
    event), no event is appended: the same head is signed again at this time, unless the newest
    checkpoint is less than half an interval old (then it is returned): two calls in a row sign once.
    """
    _lock_chain()
    audit_seal()  # everything recorded so far, so the signed head covers it
    head = _chain_head()
    head_id, head_hash = head
    if head_id == 0:
        return None
    latest = AuditCheckpoint.objects.order_by("-id").first()
    now = timezone.now()
    if latest is not None:
        _log_unsigned_period(latest, now)
    if latest is not None and latest.event_id == head_id and latest.event_hash == head_hash:
        # A heartbeat, without an event, so an idle chain does not grow: while the beat runs the newest
        # checkpoint is never much older than an interval, so verification can tell an idle chain from
        # one cut back to an old checkpoint with the checkpoints after it (ELSA_AUDIT_CHECKPOINT_MAX_AGE_SECONDS).
        if now - latest.created < timedelta(seconds=settings.ELSA_AUDIT_CHECKPOINT_INTERVAL_SECONDS / 2):
            return latest
        return _checkpoint_sign(event_id=head_id, event_hash=head_hash)
    values = _event_fields(
        event_type="audit.checkpoint",
        action="created",
        result=AuditEvent.Result.SUCCESS,
        resource=("audit-chain", "default"),
        actor=actor or Actor.system("audit-checkpoint"),
        context={"previous_head_id": head_id},
        metadata=None,
    )
    (event,) = _append_chained([_with_parts(values)], head)
    return _checkpoint_sign(event_id=event["id"], event_hash=event["hash"])


def _log_unsigned_period(latest: AuditCheckpoint, now: datetime) -> None:
    """Warn when the chain is about to be signed after going unsigned for longer than the allowed age.

    The beat stopped, or the newest checkpoints were deleted with the events after the one left (a cut
    tail): signing now ends the period, which verify_audit_chain keeps reporting as a warning.
    """
    unsigned = (now - latest.created).total_seconds()
    if unsigned > settings.ELSA_AUDIT_CHECKPOINT_MAX_AGE_SECONDS:
        extra = {
            "audit_checkpoint_event_id": latest.event_id,
            "audit_checkpoint_created": canonical_timestamp(latest.created),
            "audit_unsigned_seconds": round(unsigned, 3),
        }
        logger.warning("audit chain unsigned for longer than ELSA_AUDIT_CHECKPOINT_MAX_AGE_SECONDS", extra=extra)


def _checkpoint_sign(*, event_id: int, event_hash: str) -> AuditCheckpoint:
    """Store a checkpoint of one chained event, signed now; the chain lock is held."""
    created = timezone.now()
    checkpoint = AuditCheckpoint(
        event_id=event_id,
        event_hash=event_hash,
        created=created,
        signature=checkpoint_signature(
            key=settings.ELSA_AUDIT_CHECKPOINT_KEY, event_id=event_id, event_hash=event_hash, created=created
        ),
    )
    checkpoint.save()
    # Also written to the log stream, so a copy of every signed head lives outside the database;
    # only once committed: a rolled-back checkpoint's id is reused by the next event, with another hash.
    extra = {
        "audit_checkpoint_event_id": event_id,
        "audit_checkpoint_hash": event_hash,
        "audit_checkpoint_created": canonical_timestamp(created),
        "audit_checkpoint_signature": checkpoint.signature,
    }
    transaction.on_commit(lambda: logger.info("audit checkpoint", extra=extra))
    return checkpoint


@transaction.atomic
def audit_purge(*, through_id: int, through_hash: str, archived_from: int, actor: Actor | None = None) -> int:
    """Delete events #1..through_id (those still stored), which an archive holds; returns how many.

    The caller (manage.py purge_audit) has verified the archive: it holds events `archived_from`
    through `through_id`, the latter with hash `through_hash`. Under the chain lock, in this one
    transaction, the purge is refused (InvalidInput) unless the stored event `through_id` has that
    hash, a validly signed checkpoint names exactly that event and hash (the purge anchor the chain
    is then verified from), and the archive starts at or before the oldest stored event. Then the
    events are deleted (the append-only trigger lets this transaction's DELETE of ids up to
    through_id through, see migration 0004), checkpoints are kept, and an `audit.purged` event is
    chained with through_id and through_hash in its context: the purge is itself evidence. That
    event is signed (a checkpoint naming it) in the same transaction: a purge never commits unsigned,
    waiting for the next beat to sign its record.
    """
    _lock_chain()
    audit_seal()  # what is pending is chained before the purge event, as for a checkpoint
    stored = AuditEvent.objects.filter(id=through_id).values_list("hash", flat=True).first()
    if stored is None:
        raise InvalidInput(f"Event #{through_id} is not in the database (not chained yet, or already purged).")
    if stored != through_hash:
        raise InvalidInput(f"The archive's event #{through_id} does not match the database's (another chain).")
    checkpoints = AuditCheckpoint.objects.filter(event_id=through_id)
    signed = load_anchors(checkpoints.values_list("event_id", "event_hash", "created", "signature"))
    if signed.hashes.get(through_id) != stored:
        raise InvalidInput(f"No validly signed checkpoint names event #{through_id}: purge through a checkpoint.")
    oldest = AuditEvent.objects.order_by("id").values_list("id", flat=True).first()
    assert oldest is not None  # event through_id is stored
    if archived_from > oldest:
        raise InvalidInput(
            f"The archive starts at event #{archived_from}: events #{oldest} to #{archived_from - 1} are not in it."
        )
    # Read before the DELETE: a purge through the head leaves no event to read it from.
    head = _chain_head()
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Transaction-local and bound to this transaction's id and to through_id (migration 0004).
            cursor.execute(
                "SELECT set_config('elsa.audit_purge', pg_current_xact_id()::text || ':' || %s, true)", [through_id]
            )
        cursor.execute(f"DELETE FROM {table} WHERE id <= %s", [through_id])  # noqa: S608 - a model's table
        deleted = cursor.rowcount
        if connection.vendor == "postgresql":
            cursor.execute("SELECT set_config('elsa.audit_purge', '', true)")
    values = _event_fields(
        event_type=PURGE_EVENT_TYPE,
        action="purged",
        result=AuditEvent.Result.SUCCESS,
        resource=("audit-chain", "default"),
        actor=actor or Actor.system("purge_audit"),
        context={"through_id": through_id, "through_hash": through_hash, "first_id": oldest, "deleted": deleted},
        metadata=None,
    )
    (event,) = _append_chained([_with_parts(values)], head)
    # Signed before the purge commits: unsigned, its record could be rewritten and rehashed (another
    # actor, another count) with nothing to show for it until the next checkpoint, as any unsigned head.
    _checkpoint_sign(event_id=event["id"], event_hash=event["hash"])
    return deleted
