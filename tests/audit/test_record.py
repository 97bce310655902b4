"""audit_record: the chain it builds, same-transaction emission, fail-closed writes, append-only rows."""

import hashlib
import json
import uuid

import psycopg
import pytest
from django.conf import settings
from django.db import connection, transaction
from django.db.transaction import TransactionManagementError
from django.db.utils import OperationalError, ProgrammingError
from django.utils import timezone

from audit.actors import Actor
from audit.chain import GENESIS_HASH, canonical_event, canonical_parts, canonical_timestamp
from audit.models import AppendOnlyError, AuditEvent
from audit.services import CHAIN_LOCK_KEY, audit_record
from audit.verification import verify_chain
from elsa_site.errors import InvalidInput
from identity.models import User
from tests.audit.helpers import append_events

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
        event = audit_record(
            event_type="executor.call",
            action="called",
            result="failure",
            resource=("executor", "fraud-check"),
            actor=actor,
            context={"status": 503},
            metadata={"attempt": 2},
        )
    event = AuditEvent.objects.get(id=event.id)
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
    assert AuditEvent.objects.count() == 0


@pytest.mark.postgres
def test_action_fails_when_its_event_cannot_be_written():
    # Another session holds the chain lock; our event cannot be appended within the lock timeout,
    # so audit_record raises and the state change in the same transaction rolls back (fail closed).
    db = settings.DATABASES["default"]
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=connection.settings_dict["NAME"]
    ) as blocker:
        blocker.execute("SELECT pg_advisory_lock(%s)", [CHAIN_LOCK_KEY])
        with pytest.raises(OperationalError), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '200ms'")
            User.objects.create(username="never-committed")
            audit_record(event_type="config.changed", action="created", actor=Actor.system())
    assert not User.objects.filter(username="never-committed").exists()
    assert AuditEvent.objects.count() == 0


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
    ],
)
def test_database_triggers_refuse_raw_changes(statement):
    append_events(2)
    from audit.services import audit_checkpoint_create

    audit_checkpoint_create()
    with connection.cursor() as cursor:
        # Test databases allow Django's between-test TRUNCATE; switch that off as production has it.
        cursor.execute("SET LOCAL elsa.audit_allow_truncate = 'off'")
        with pytest.raises(ProgrammingError, match="append-only"), transaction.atomic():
            cursor.execute(statement)
    assert AuditEvent.objects.count() == 3
    assert verify_chain().is_valid


@pytest.mark.postgres
def test_caller_cannot_swallow_a_failed_append_and_commit():
    db = settings.DATABASES["default"]
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=connection.settings_dict["NAME"]
    ) as blocker:
        blocker.execute("SELECT pg_advisory_lock(%s)", [CHAIN_LOCK_KEY])
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
def test_portable_append_path_builds_the_same_chain():
    # The SQLite path (Python hashing, ORM insert) and the PostgreSQL path (server-side sha256)
    # interleave into one chain that verifies.
    from audit.services import _append_portable

    append_events(2)
    fields = {
        "event_id": uuid.uuid4(),
        "event_type": "config.changed",
        "action": "updated",
        "result": "success",
        "resource_type": "executor",
        "resource_id": "e-1",
        "actor_type": "user",
        "actor_id": "u-1",
        "actor_name": "Zoë",
        "actor_ip": "10.0.0.1",
        "context": {"fields": ["timeout", "url"]},
        "metadata": {},
    }
    with transaction.atomic():
        event = _append_portable(fields)
    assert (event.id, event.previous_hash) == (3, AuditEvent.objects.get(id=2).hash)
    append_events(1)
    assert verify_chain().is_valid


def test_canonical_parts_reassemble_the_canonical_event():
    fields = {
        "event_id": uuid.uuid4(),
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
    a, b, c, d = canonical_parts(**fields)
    now = timezone.now()
    full = canonical_event(**fields, id=42, timestamp=now, previous_hash="f" * 64)
    assert (a + "42" + b + "f" * 64 + c + canonical_timestamp(now) + d).encode() == full


@pytest.mark.postgres
def test_every_search_filter_column_is_indexed():
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, AuditEvent._meta.db_table)
    leading = {tuple(c["columns"])[0] for c in constraints.values() if c["index"] or c["primary_key"]}
    assert {"event_type", "action", "result", "resource_type", "actor_id", "timestamp", "id"} <= leading
