"""audit_record: the chain it builds, same-transaction emission, fail-closed writes, append-only rows."""

import hashlib
import json

import pytest
from django.db import connection, transaction
from django.db.transaction import TransactionManagementError
from django.db.utils import OperationalError, ProgrammingError
from django.utils import timezone

from audit.actors import Actor
from audit.chain import GENESIS_HASH, canonical_event, canonical_parts, hash_parts
from audit.models import AppendOnlyError, AuditEvent, PendingAuditEvent
from audit.services import CHAIN_LOCK_KEY, audit_record, audit_seal
from audit.verification import verify_chain
from elsa_site.errors import InvalidInput
from identity.models import User
from tests.audit.helpers import append_events, record_event
from tests.db_sessions import other_session

pytestmark = pytest.mark.django_db


def test_first_event_links_to_genesis_and_next_links_to_it():
    first, second = append_events(2)
    assert (first.id, second.id) == (1, 2)
    assert first.previous_hash == GENESIS_HASH
    assert second.previous_hash == first.hash


def test_hash_is_sha256_of_canonical_json_of_every_field():
    event = append_events(1, context={"b": [1, 2.5, "x"], "a": {"z": True, "y": None}})[0]
    event.refresh_from_db()
    record = {
        "id": event.id,
        "event_id": str(event.event_id),
        "timestamp": event.timestamp.isoformat(timespec="microseconds"),
        "event_type": event.event_type,
        "action": event.action,
        "result": event.result,
        "resource_type": event.resource_type,
        "resource_id": event.resource_id,
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "actor_name": event.actor_name,
        "actor_ip": event.actor_ip,
        "context": event.context,
        "metadata": event.metadata,
        "previous_hash": event.previous_hash,
    }
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    assert canonical == canonical_event(**record)
    assert hashlib.sha256(canonical).hexdigest() == event.hash
    assert record["timestamp"].endswith("+00:00")


def test_event_records_actor_resource_and_context():
    actor = Actor(type="application", id="app-7", ip="2001:db8::1", name="billing")
    with transaction.atomic():
        audit_record(
            event_type="executor.call",
            action="called",
            result="failure",
            resource=("executor", "fraud-check"),
            actor=actor,
            context={"status": 503},
            metadata={"attempt": 2},
        )
    audit_seal()
    event = AuditEvent.objects.get()
    assert (event.resource_type, event.resource_id) == ("executor", "fraud-check")
    assert (event.actor_type, event.actor_id, event.actor_name, event.actor_ip) == (
        "application",
        "app-7",
        "billing",
        "2001:db8::1",
    )
    assert (event.result, event.context, event.metadata) == ("failure", {"status": 503}, {"attempt": 2})


def test_values_jsonb_would_alter_still_verify():
    # 1e20 reads back from jsonb as an int, -0.0 as 0, NUL and lone surrogates are refused by
    # PostgreSQL: all normalized before hashing, so the event is stored and verifies.
    actor = Actor(type="user", id='ü"\\\x00\udc00', name="Zoë\n\t\x01", ip="::ffff:1.2.3.4")
    context = {"big": 1e20, "neg": -0.0, "small": 1.5e-7, "text": "a\x00b\ud800", "uni": "é€😀"}
    append_events(1, actor=actor, context=context)
    assert verify_chain().is_valid


def test_event_rolls_back_with_the_action():
    with pytest.raises(RuntimeError), transaction.atomic():
        User.objects.create(username="rolled-back")
        audit_record(event_type="config.changed", action="created", actor=Actor.system())
        raise RuntimeError("the action fails after its event was written")
    assert not User.objects.filter(username="rolled-back").exists()
    assert PendingAuditEvent.objects.count() == 0
    audit_seal()
    assert AuditEvent.objects.count() == 0


@pytest.mark.postgres
def test_action_fails_when_its_event_cannot_be_written():
    # Another session locks the table events are written to; our event cannot be written within
    # the lock timeout, so audit_record raises and the state change in the same transaction rolls
    # back (fail closed).
    with other_session() as blocker:
        blocker.execute("LOCK TABLE audit_pendingauditevent IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(OperationalError), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '200ms'")
            User.objects.create(username="never-committed")
            audit_record(event_type="config.changed", action="created", actor=Actor.system())
    assert not User.objects.filter(username="never-committed").exists()
    assert PendingAuditEvent.objects.count() == 0


@pytest.mark.postgres
def test_recording_never_waits_on_the_chain_lock():
    # Another session holds the chain lock (a sealer at work): recording, inside the action's
    # transaction, takes no part in the chain and goes through at once.
    with other_session() as blocker:
        blocker.execute("SELECT pg_advisory_lock(%s)", [CHAIN_LOCK_KEY])
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '200ms'")
            User.objects.create(username="recorded")
            audit_record(event_type="config.changed", action="created", actor=Actor.system())
    assert PendingAuditEvent.objects.get().event_type == "config.changed"


@pytest.mark.parametrize(
    "fields",
    [
        {"event_type": "", "action": "x"},
        {"event_type": "x", "action": "x", "result": "maybe"},
        {"event_type": "x", "action": "x", "actor": Actor(type="robot")},
        {"event_type": "x", "action": "x", "context": {"n": float("nan")}},
        {"event_type": "x", "action": "x", "context": {"o": object()}},
    ],
)
def test_invalid_event_is_refused(fields):
    fields.setdefault("actor", Actor.system())
    with pytest.raises(InvalidInput):
        audit_record(**fields)
    assert AuditEvent.objects.count() == 0


def test_forged_client_ip_is_normalized_or_dropped():
    event = append_events(1, actor=Actor(type="anonymous", ip="not-an-ip"))[0]
    assert event.actor_ip == ""


def test_orm_refuses_to_update_a_saved_event():
    event = append_events(1)[0]
    event.action = "edited"
    with pytest.raises(AppendOnlyError):
        event.save()


def test_orm_refuses_to_delete_an_event():
    event = append_events(1)[0]
    with pytest.raises(AppendOnlyError):
        event.delete()
    assert AuditEvent.objects.filter(id=event.id).exists()


@pytest.mark.parametrize("operation", ["update", "delete", "bulk_update", "bulk_create"])
def test_orm_refuses_bulk_changes(operation):
    event = append_events(1)[0]
    calls = {
        "update": lambda: AuditEvent.objects.filter(id=event.id).update(action="edited"),
        "delete": lambda: AuditEvent.objects.all().delete(),
        "bulk_update": lambda: AuditEvent.objects.bulk_update([event], ["action"]),
        "bulk_create": lambda: AuditEvent.objects.bulk_create([AuditEvent(id=99)]),
    }
    with pytest.raises(AppendOnlyError):
        calls[operation]()
    assert AuditEvent.objects.get(id=event.id).action == "started"


@pytest.mark.postgres
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_auditevent SET action = 'edited'",
        "DELETE FROM audit_auditevent",
        "TRUNCATE audit_auditevent",
        "UPDATE audit_auditcheckpoint SET event_hash = 'x'",
        "DELETE FROM audit_auditcheckpoint",
        "TRUNCATE audit_auditcheckpoint",
        "UPDATE audit_pendingauditevent SET action = 'edited'",
        "DELETE FROM audit_pendingauditevent",
        "TRUNCATE audit_pendingauditevent",
    ],
)
def test_database_triggers_refuse_raw_changes(statement):
    append_events(2)
    from audit.services import audit_checkpoint_create

    audit_checkpoint_create()
    record_event()  # a pending event, so row triggers on the pending table have a row to refuse
    with connection.cursor() as cursor:
        # Test databases allow Django's between-test TRUNCATE; switch that off as production has it.
        cursor.execute("SET LOCAL elsa.audit_allow_truncate = 'off'")
        with pytest.raises(ProgrammingError, match="append-only"), transaction.atomic():
            cursor.execute(statement)
    assert AuditEvent.objects.count() == 3
    assert PendingAuditEvent.objects.get().action == "started"
    assert verify_chain().is_valid


@pytest.mark.postgres
def test_caller_cannot_swallow_a_failed_append_and_commit():
    with other_session() as blocker:
        blocker.execute("LOCK TABLE audit_pendingauditevent IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(TransactionManagementError), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '200ms'")
            User.objects.create(username="swallowed")
            try:
                audit_record(event_type="config.changed", action="created", actor=Actor.system())
            except OperationalError:
                pass  # a careless caller carries on: the transaction is already doomed
            User.objects.create(username="after-the-failure")
    assert not User.objects.filter(username__in=["swallowed", "after-the-failure"]).exists()


@pytest.mark.postgres
def test_chaining_leaves_deletes_refused_for_the_rest_of_the_transaction():
    # audit_chain_pending() allows its own deletes only while it runs.
    record_event(1)
    with transaction.atomic():
        assert audit_seal() == 1
        record_event(2)
        with pytest.raises(ProgrammingError, match="removed only by chaining"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM audit_pendingauditevent")
    assert PendingAuditEvent.objects.count() == 1


def test_events_are_chained_in_the_order_they_were_recorded():
    for number in range(3):
        record_event(number)
    assert AuditEvent.objects.count() == 0  # recorded, not chained: this transaction never commits
    assert audit_seal() == 3
    events = list(AuditEvent.objects.order_by("id"))
    assert [e.context["n"] for e in events] == [0, 1, 2]
    assert [e.id for e in events] == [1, 2, 3]
    assert PendingAuditEvent.objects.count() == 0
    assert audit_seal() == 0
    assert verify_chain().is_valid


def test_chained_event_keeps_the_recorded_payload():
    record_event(7, actor=Actor(type="user", id="u-9", ip="10.1.2.3", name="bob"), context={"k": [1, "x"]})
    pending = PendingAuditEvent.objects.get()
    audit_seal()
    event = AuditEvent.objects.get()
    for field in ("event_id", "timestamp", "event_type", "action", "result", "resource_type", "resource_id"):
        assert getattr(event, field) == getattr(pending, field), field
    assert (event.actor_id, event.actor_ip, event.context) == ("u-9", "10.1.2.3", {"k": [1, "x"]})


@pytest.mark.postgres
def test_every_search_filter_column_is_indexed():
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, AuditEvent._meta.db_table)
    leading = {tuple(c["columns"])[0] for c in constraints.values() if c["index"] or c["primary_key"]}
    # resource_id is a filter of its own too: it needs an index it leads (PostgreSQL has no skip scan).
    assert {"event_type", "action", "result", "resource_type", "resource_id", "actor_id", "timestamp", "id"} <= leading


def test_canonical_parts_reassemble_the_canonical_event():
    fields = {
        "event_id": "3f1d2c4b-0000-4000-8000-000000000001",
        "event_type": "t",
        "action": 'a"b\\c\n',
        "result": "success",
        "resource_type": "",
        "resource_id": "\u00e9\x01",
        "actor_type": "system",
        "actor_id": "x",
        "actor_name": "ñ",
        "actor_ip": "",
        "context": {"z": [1, {"b": 2, "a": 1}]},
        "metadata": {},
    }
    now = timezone.now()
    head, middle, tail = canonical_parts(timestamp=now, **fields)
    full = canonical_event(**fields, id=42, timestamp=now, previous_hash="f" * 64)
    assert (head + "42" + middle + "f" * 64 + tail).encode() == full
    assert hash_parts(head, middle, tail, id=42, previous_hash="f" * 64) == hashlib.sha256(full).hexdigest()


@pytest.mark.postgres
def test_python_and_postgresql_chaining_build_one_chain():
    # SQLite chains in Python, PostgreSQL in the function audit_chain_pending(): interleaved,
    # they give one chain that verification (Python, from the stored columns) accepts.
    from audit.services import _chain_pending_portable, _lock_chain

    record_event(1, context={"f": 0.5, "s": "é"})
    with transaction.atomic():
        _lock_chain()
        assert _chain_pending_portable() == 1
    record_event(2)
    assert audit_seal() == 1
    record_event(3)
    with transaction.atomic():
        _lock_chain()
        assert _chain_pending_portable() == 1
    assert list(AuditEvent.objects.values_list("id", flat=True)) == [1, 2, 3]
    assert verify_chain().is_valid


@pytest.mark.postgres
def test_postgresql_chaining_in_several_batches_keeps_order_ids_and_links():
    # audit_chain_pending() moves `batch` events per DELETE and INSERT; 7 events in batches of 3
    # take three rounds, and the chain continues across them as if built one event at a time.
    append_events(1)
    for number in range(7):
        record_event(number, context={"n": number, "text": "ü" * number})
    with connection.cursor() as cursor:
        cursor.execute("SELECT audit_chain_pending(%s, 1000, 3, true)", [CHAIN_LOCK_KEY])
        assert cursor.fetchone()[0] == 7
    events = list(AuditEvent.objects.order_by("id"))
    assert [event.id for event in events] == list(range(1, 9))
    assert [event.context["n"] for event in events[1:]] == list(range(7))
    assert all(event.previous_hash == before.hash for before, event in zip(events, events[1:], strict=False))
    assert PendingAuditEvent.objects.count() == 0
    assert verify_chain().is_valid
