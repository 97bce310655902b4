"""Writes of the audit app: append an event to the chain, record a signed checkpoint."""

import ipaddress
import json
import logging
import uuid

import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audit.actors import Actor
from audit.chain import (
    GENESIS_HASH,
    canonical_parts,
    canonical_timestamp,
    checkpoint_signature,
    compute_hash,
    normalize_json,
    safe_text,
)
from audit.models import AuditCheckpoint, AuditEvent
from elsa_site.errors import InvalidInput

logger = logging.getLogger("elsa.audit")

# Key of the PostgreSQL advisory lock that serializes appends ("elsaaudt" as a 64-bit integer).
CHAIN_LOCK_KEY = 0x656C736161756474

_RESULTS = frozenset(AuditEvent.Result.values)
_ACTOR_TYPES = frozenset(AuditEvent.ActorType.values)


def _lock_chain() -> None:
    """Take the chain lock for the rest of the caller's transaction, so appends never fork.

    PostgreSQL: a transaction-level advisory lock, held until the caller's transaction commits or
    rolls back. The next writer gets it only after that commit, and in READ COMMITTED its next
    statement (the head read below) sees the committed head. This serializes writers across
    processes and hosts sharing the database.

    SQLite: the settings open every transaction with BEGIN IMMEDIATE, which already takes the
    database's single write lock before the head is read, so writers are serialized there too.

    Either way, the unique primary key (head + 1) and unique previous_hash make a fork impossible
    to commit even if this lock were bypassed: the second writer would fail, never fork.
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


# On PostgreSQL one statement appends: it reads the head, stamps the time, builds the canonical
# text from the parts prepared in Python (audit.chain.canonical_parts) and hashes it with the
# server's sha256(). Taking no client round trip between lock and insert keeps the section that
# serializes writers short; verification recomputes every hash in Python, so both must agree.
_PG_LOCK_AND_APPEND = """
SELECT pg_advisory_xact_lock(%(lock_key)s);
WITH head AS (
    SELECT id, hash FROM audit_auditevent ORDER BY id DESC LIMIT 1
), next AS (
    SELECT COALESCE((SELECT id FROM head), 0) + 1 AS id,
           COALESCE((SELECT hash FROM head), %(genesis)s) AS previous_hash,
           clock_timestamp() AS ts
)
INSERT INTO audit_auditevent (
    id, event_id, timestamp, event_type, action, result, resource_type, resource_id,
    actor_type, actor_id, actor_name, actor_ip, context, metadata, previous_hash, hash
)
SELECT next.id, %(event_id)s, next.ts, %(event_type)s, %(action)s, %(result)s, %(resource_type)s,
       %(resource_id)s, %(actor_type)s, %(actor_id)s, %(actor_name)s, %(actor_ip)s,
       %(context)s::jsonb, %(metadata)s::jsonb, next.previous_hash,
       encode(sha256(convert_to(
           %(part_a)s || next.id::text || %(part_b)s || next.previous_hash || %(part_c)s
           || to_char(next.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') || '+00:00' || %(part_d)s,
           'UTF8')), 'hex')
FROM next
RETURNING id, timestamp, previous_hash, hash
"""


def _append_postgresql(fields: dict) -> AuditEvent:
    part_a, part_b, part_c, part_d = canonical_parts(**fields)
    params = {
        **fields,
        "event_id": str(fields["event_id"]),
        "context": json.dumps(fields["context"]),
        "metadata": json.dumps(fields["metadata"]),
        "genesis": GENESIS_HASH,
        "lock_key": CHAIN_LOCK_KEY,
        "part_a": part_a,
        "part_b": part_b,
        "part_c": part_c,
        "part_d": part_d,
    }
    # Lock and insert go to the server as one simple-protocol query of two statements (one
    # round trip). In READ COMMITTED each statement takes its own snapshot, so the INSERT, which
    # starts only once the lock is granted, reads the committed head. ClientCursor is needed for
    # two statements in one query; it still binds every value as an escaped literal (psycopg's
    # quoting), never by string formatting here.
    connection.ensure_connection()
    # wrap_database_errors: a failure surfaces as Django's OperationalError etc., as elsewhere.
    with connection.wrap_database_errors, psycopg.ClientCursor(connection.connection) as cursor:
        cursor.execute(_PG_LOCK_AND_APPEND, params)
        cursor.nextset()
        row = cursor.fetchone()
        assert row is not None  # INSERT ... RETURNING always returns the row
        event_id, timestamp, previous_hash, digest = row
    event = AuditEvent(**fields, id=event_id, timestamp=timestamp, previous_hash=previous_hash, hash=digest)
    event._state.adding = False  # it is stored: a later save() is an update, which is refused
    event._state.db = connection.alias
    return event


def _append_portable(fields: dict) -> AuditEvent:
    _lock_chain()
    head_id, head_hash = _chain_head()
    fields = {**fields, "timestamp": timezone.now(), "id": head_id + 1, "previous_hash": head_hash}
    event = AuditEvent(**fields, hash=compute_hash(**fields))
    event.save()
    return event


def audit_record(
    *,
    event_type: str,
    action: str,
    result: str = AuditEvent.Result.SUCCESS,
    resource: tuple[str, str] | None = None,
    actor: Actor,
    context: dict | None = None,
    metadata: dict | None = None,
) -> AuditEvent:
    """Append one event to the chain, inside the caller's transaction (fail closed).

    Call it within the same `transaction.atomic()` as the state change it records: if the change
    rolls back, the event goes with it; if the event cannot be written, this raises and the change
    rolls back. Never pass secrets, tokens or request bodies in context or metadata. The chain lock
    is held until the caller commits, so call it late in the transaction.
    """
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

    # Everything that does not depend on the chain head is prepared before taking the lock.
    fields = {
        "event_id": uuid.uuid4(),
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
    # savepoint=False: inside the caller's transaction a failed append dooms that whole
    # transaction (fail closed: the caller cannot catch it and commit its change without the
    # event), and no SAVEPOINT round trips are spent while other writers wait for the chain lock.
    # Invalid arguments are refused above, before any database work, and doom nothing.
    with transaction.atomic(savepoint=False):
        if connection.vendor == "postgresql":
            return _append_postgresql(fields)
        return _append_portable(fields)


@transaction.atomic
def audit_checkpoint_create(*, actor: Actor | None = None) -> AuditCheckpoint | None:
    """Sign the current chain head; idempotent while the head does not move. None for an empty chain.

    The checkpoint first appends an `audit.checkpoint` event, then signs that event (the new head),
    so the next run finds the head already signed and writes nothing while the system is idle.
    """
    _lock_chain()
    head_id, head_hash = _chain_head()
    if head_id == 0:
        return None
    latest = AuditCheckpoint.objects.order_by("-id").first()
    if latest is not None and latest.event_id == head_id and latest.event_hash == head_hash:
        return latest
    event = audit_record(
        event_type="audit.checkpoint",
        action="created",
        resource=("audit-chain", "default"),
        actor=actor or Actor.system("audit-checkpoint"),
        context={"previous_head_id": head_id},
    )
    created = timezone.now()
    checkpoint = AuditCheckpoint(
        event_id=event.id,
        event_hash=event.hash,
        created=created,
        signature=checkpoint_signature(
            key=settings.ELSA_AUDIT_CHECKPOINT_KEY, event_id=event.id, event_hash=event.hash, created=created
        ),
    )
    checkpoint.save()
    # Also written to the log stream, so a copy of every signed head lives outside the database.
    logger.info(
        "audit checkpoint",
        extra={
            "audit_checkpoint_event_id": event.id,
            "audit_checkpoint_hash": event.hash,
            "audit_checkpoint_created": canonical_timestamp(created),
            "audit_checkpoint_signature": checkpoint.signature,
        },
    )
    return checkpoint
