"""Tamper detection: raw-SQL edits, deletions, swaps, truncation and rewrites fail at the right event."""

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from audit.chain import EVENT_COLUMNS, compute_hash
from audit.models import AuditCheckpoint, AuditEvent
from audit.services import audit_checkpoint_create
from audit.verification import verify_chain, verify_event
from tests.audit.helpers import append_events, triggers_disabled

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def run_verify_command(*args) -> tuple[int, str]:
    from io import StringIO

    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit_chain", *args, stdout=out, stderr=err)
    except SystemExit as exit_:
        return exit_.code, out.getvalue() + err.getvalue()
    return 0, out.getvalue() + err.getvalue()


def rehash_from(cursor, first_id: int) -> None:
    """An attacker's full rewrite: recompute every hash and link from `first_id` to the head."""
    previous = AuditEvent.objects.filter(id=first_id - 1).values_list("hash", flat=True).first() or "0" * 64
    for event in AuditEvent.objects.filter(id__gte=first_id).order_by("id"):
        # Every hashed column but the link, which the rewrite recomputes.
        fields = {f: getattr(event, f) for f in EVENT_COLUMNS[:-2]}
        new_hash = compute_hash(**fields, previous_hash=previous)
        cursor.execute(
            "UPDATE audit_auditevent SET previous_hash = %s, hash = %s WHERE id = %s", [previous, new_hash, event.id]
        )
        previous = new_hash


def test_intact_chain_verifies():
    append_events(5)
    result = verify_chain()
    assert (result.is_valid, result.first_invalid_id, result.total_checked, result.head_id) == (True, None, 5, 5)


def test_empty_chain_verifies():
    assert verify_chain().is_valid


def test_edited_field_is_reported_at_that_event():
    append_events(5)
    with triggers_disabled() as cursor:
        cursor.execute("UPDATE audit_auditevent SET resource_id = 'someone-else' WHERE id = 3")
    result = verify_chain()
    assert (result.is_valid, result.first_invalid_id) == (False, 3)
    assert "does not match its hash" in result.reason


def test_edited_json_context_is_reported_at_that_event():
    append_events(5)
    with triggers_disabled() as cursor:
        cursor.execute("""UPDATE audit_auditevent SET context = '{"n": 99}' WHERE id = 4""")
    assert verify_chain().first_invalid_id == 4


def test_edited_event_with_recomputed_own_hash_breaks_the_next_link():
    append_events(5)
    with triggers_disabled() as cursor:
        cursor.execute("UPDATE audit_auditevent SET action = 'forged' WHERE id = 2")
        event = AuditEvent.objects.get(id=2)
        fields = {f.name: getattr(event, f.name) for f in AuditEvent._meta.concrete_fields if f.name != "hash"}
        cursor.execute("UPDATE audit_auditevent SET hash = %s WHERE id = 2", [compute_hash(**fields)])
    result = verify_chain()
    assert (result.is_valid, result.first_invalid_id) == (False, 3)
    assert "does not link" in result.reason


def test_deleted_middle_event_is_reported_as_missing():
    append_events(5)
    with triggers_disabled() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE id = 3")
    result = verify_chain()
    assert (result.is_valid, result.first_invalid_id) == (False, 3)
    assert "event #3 is missing" in result.reason


def test_swapped_events_are_reported_at_the_first_swapped_position():
    append_events(5)
    with triggers_disabled() as cursor:
        # Swap the chain positions of events 2 and 3 (their ids), keeping every other column.
        cursor.execute("UPDATE audit_auditevent SET id = -2 WHERE id = 2")
        cursor.execute("UPDATE audit_auditevent SET id = 2 WHERE id = 3")
        cursor.execute("UPDATE audit_auditevent SET id = 3 WHERE id = -2")
    result = verify_chain()
    assert (result.is_valid, result.first_invalid_id) == (False, 2)


def test_swapped_timestamps_are_reported_at_the_first_swapped_event():
    append_events(5)
    with triggers_disabled() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent AS a SET timestamp = b.timestamp FROM audit_auditevent AS b "
            "WHERE (a.id, b.id) IN ((4, 5), (5, 4))"
        )
    assert verify_chain().first_invalid_id == 4


def test_truncated_tail_after_a_checkpoint_is_reported_at_the_first_missing_event():
    append_events(5)
    checkpoint = audit_checkpoint_create()  # appends event 6 and signs it
    assert checkpoint.event_id == 6
    with triggers_disabled() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE id >= 4")
    result = verify_chain()
    assert (result.is_valid, result.first_invalid_id) == (False, 4)
    assert "signed checkpoint" in result.reason


def test_truncated_table_is_reported_at_the_first_event():
    append_events(3)
    audit_checkpoint_create()
    with triggers_disabled() as cursor:
        cursor.execute("TRUNCATE audit_auditevent")
    result = verify_chain()
    assert (result.is_valid, result.first_invalid_id) == (False, 1)


def test_whole_table_rewrite_is_caught_by_the_signed_checkpoint():
    append_events(5)
    audit_checkpoint_create()  # signs event 6
    append_events(2)
    with triggers_disabled() as cursor:
        cursor.execute("UPDATE audit_auditevent SET actor_id = 'framed' WHERE id = 2")
        rehash_from(cursor, 2)
    result = verify_chain()
    assert (result.is_valid, result.first_invalid_id) == (False, 6)
    assert "signed checkpoint" in result.reason


def test_forged_checkpoint_signature_is_reported():
    append_events(3)
    with triggers_disabled() as cursor:
        head = AuditEvent.objects.order_by("-id").first()
        cursor.execute(
            "INSERT INTO audit_auditcheckpoint (event_id, event_hash, created, signature) VALUES (%s, %s, now(), %s)",
            [head.id, head.hash, "0" * 64],
        )
    result = verify_chain()
    assert (result.is_valid, result.first_invalid_id) == (False, 3)
    assert "invalid signature" in result.reason


def test_checkpoint_task_service_is_idempotent_while_the_head_does_not_move():
    append_events(2)
    first = audit_checkpoint_create()
    again = audit_checkpoint_create()
    assert first.pk == again.pk and AuditCheckpoint.objects.count() == 1
    event = AuditEvent.objects.get(id=first.event_id)
    assert (event.event_type, event.actor_type) == ("audit.checkpoint", "system")
    assert verify_chain().is_valid


def test_checkpoint_of_empty_chain_is_none():
    assert audit_checkpoint_create() is None


def test_event_verification_covers_the_segment_between_checkpoints():
    append_events(3)
    audit_checkpoint_create()  # event 4 signed
    append_events(3)  # events 5..7
    result = verify_event(6)
    # From the checkpointed event 4 to the requested event 6.
    assert (result.is_valid, result.total_checked) == (True, 3)
    with triggers_disabled() as cursor:
        cursor.execute("UPDATE audit_auditevent SET action = 'x' WHERE id = 5")
    assert (verify_event(6).is_valid, verify_event(6).first_invalid_id) == (False, 5)
    # An event before the tampered one, in an earlier segment, still verifies up to its checkpoint.
    assert verify_event(2).is_valid


def test_event_verification_reaches_the_next_checkpoint():
    append_events(3)
    audit_checkpoint_create()  # event 4 signed
    with triggers_disabled() as cursor:
        cursor.execute("UPDATE audit_auditevent SET action = 'x' WHERE id = 3")
        rehash_from(cursor, 3)
    # Event 2 is intact by itself, but its segment runs to the checkpoint at 4, which no longer matches.
    result = verify_event(2)
    assert (result.is_valid, result.first_invalid_id) == (False, 4)


def test_event_verification_reads_only_the_checkpoints_around_the_event():
    # Heartbeat checkpoints accumulate for years: one event's verification must not read them all.
    append_events(3)
    audit_checkpoint_create()  # event 4 signed
    append_events(3)  # events 5..7
    audit_checkpoint_create()  # event 8 signed
    with triggers_disabled() as cursor:
        # A forged checkpoint nearest before event 6 is passed over as a start (the signed one at 4
        # is used) and still reported inside the segment, as before.
        cursor.execute(
            "INSERT INTO audit_auditcheckpoint (event_id, event_hash, created, signature) "
            "SELECT id, hash, now(), %s FROM audit_auditevent WHERE id = 5",
            ["0" * 64],
        )
    with CaptureQueriesContext(connection) as queries:
        result = verify_event(6)
    assert (result.is_valid, result.first_invalid_id) == (False, 5)
    assert "invalid signature" in result.reason
    reads = [q["sql"] for q in queries.captured_queries if "audit_auditcheckpoint" in q["sql"]]
    assert reads and all('"event_id" <=' in sql or '"event_id" >' in sql or '"event_id" =' in sql for sql in reads)
    assert verify_event(3).is_valid  # segment 1..4, from genesis to the signed checkpoint


def test_verify_command_succeeds_with_a_one_line_summary():
    append_events(4)
    code, output = run_verify_command()
    assert code == 0
    assert output.strip().count("\n") == 0 and "4 events verified" in output


def test_verify_command_fails_naming_the_first_bad_event():
    append_events(4)
    with triggers_disabled() as cursor:
        cursor.execute("UPDATE audit_auditevent SET result = 'failure' WHERE id = 2")
    code, output = run_verify_command()
    assert code == 1
    assert "#2" in output


def test_verification_streams_with_a_server_side_cursor():
    from django.db import transaction

    from audit.verification import _event_rows

    append_events(3)
    with transaction.atomic():
        rows = _event_rows()
        assert next(rows)[0] == 1
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_cursors WHERE name LIKE '_django_curs_%%'")
            assert cursor.fetchone()[0] == 1
        assert [row[0] for row in rows] == [2, 3]


def test_forged_checkpoint_beyond_the_head_is_reported():
    append_events(2)
    with triggers_disabled() as cursor:
        cursor.execute(
            "INSERT INTO audit_auditcheckpoint (event_id, event_hash, created, signature) VALUES (9, %s, now(), %s)",
            ["a" * 64, "0" * 64],
        )
    result = verify_chain()
    assert (result.is_valid, result.first_invalid_id) == (False, 9)
    assert "invalid signature" in result.reason


def test_checkpoint_is_also_written_to_the_log_once_committed(caplog, django_capture_on_commit_callbacks):
    append_events(1)
    with caplog.at_level("INFO", logger="elsa.audit"), django_capture_on_commit_callbacks() as callbacks:
        checkpoint = audit_checkpoint_create()
        assert not [r for r in caplog.records if r.getMessage() == "audit checkpoint"]  # not committed yet
    for callback in callbacks:
        callback()  # the commit
    record = next(r for r in caplog.records if r.getMessage() == "audit checkpoint")
    assert (record.audit_checkpoint_event_id, record.audit_checkpoint_hash) == (
        checkpoint.event_id,
        checkpoint.event_hash,
    )
    assert record.audit_checkpoint_signature == checkpoint.signature


def test_rolled_back_checkpoint_is_not_written_to_the_log(caplog, django_capture_on_commit_callbacks):
    append_events(1)
    with caplog.at_level("INFO", logger="elsa.audit"), django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError), transaction.atomic():
            audit_checkpoint_create()
            raise RuntimeError("the commit fails")
        checkpoint = audit_checkpoint_create()  # the same event id, with another hash
    records = [r for r in caplog.records if r.getMessage() == "audit checkpoint"]
    logged = [(r.audit_checkpoint_event_id, r.audit_checkpoint_hash) for r in records]
    assert logged == [(checkpoint.event_id, checkpoint.event_hash)]


def _rehash_alone(cursor, event_id: int) -> None:
    """Edit an event and recompute its own hash (not the links after it)."""
    cursor.execute("UPDATE audit_auditevent SET action = 'forged' WHERE id = %s", [event_id])
    event = AuditEvent.objects.get(id=event_id)
    fields = {f: getattr(event, f) for f in EVENT_COLUMNS[:-1]}
    cursor.execute("UPDATE audit_auditevent SET hash = %s WHERE id = %s", [compute_hash(**fields), event_id])


def _rewrite_from_6(cursor) -> None:
    cursor.execute("UPDATE audit_auditevent SET actor_id = 'framed' WHERE id = 6")
    rehash_from(cursor, 6)


# Parallel verification: the same chain, tampered in the same way, gives the same result in
# segments (one process each) as in one pass. 12 events in 3 segments: events 1-5, 5-9 and 9-.
# Each case: the tampering (SQL statements, or a function of the cursor) and the first bad event.
SEGMENT_TAMPERING = {
    "intact": ([], None),
    "edit-first-segment": (["UPDATE audit_auditevent SET action = 'x' WHERE id = 2"], 2),
    "edit-boundary": (["UPDATE audit_auditevent SET actor_id = 'x' WHERE id = 9"], 9),
    "edit-last-segment": (["UPDATE audit_auditevent SET result = 'failure' WHERE id = 11"], 11),
    # Event 4 edited and rehashed by itself: only the link of event 5, a segment's first, breaks.
    "relink-before-boundary": (lambda cursor: _rehash_alone(cursor, 4), 5),
    "delete-boundary": (["DELETE FROM audit_auditevent WHERE id = 5"], 5),
    "delete-before-boundary": (["DELETE FROM audit_auditevent WHERE id = 8"], 8),
    "swap-across-boundary": (
        [
            "UPDATE audit_auditevent SET id = -4 WHERE id = 4",
            "UPDATE audit_auditevent SET id = 4 WHERE id = 5",
            "UPDATE audit_auditevent SET id = 5 WHERE id = -4",
        ],
        4,
    ),
    "cut-tail": (["DELETE FROM audit_auditevent WHERE id >= 10"], 10),
    "rewrite": (_rewrite_from_6, 12),
    "forged-beyond-head": (
        [
            "INSERT INTO audit_auditcheckpoint (event_id, event_hash, created, signature) "
            "VALUES (40, repeat('a', 64), now(), repeat('0', 64))"
        ],
        40,
    ),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("tamper", SEGMENT_TAMPERING)
def test_parallel_segments_report_what_one_pass_reports(tamper):
    from audit.verification import _segment_starts

    append_events(11)
    audit_checkpoint_create()  # signs event 12
    assert _segment_starts(3, 0) == [1, 5, 9]
    tampering, first_bad = SEGMENT_TAMPERING[tamper]
    with triggers_disabled() as cursor:
        if callable(tampering):
            tampering(cursor)
        else:
            for statement in tampering:
                cursor.execute(statement)
    one_pass = verify_chain()
    in_segments = verify_chain(jobs=3, parallel_min_events=0)
    assert in_segments == one_pass
    assert (one_pass.is_valid, one_pass.first_invalid_id) == (first_bad is None, first_bad)


@pytest.mark.django_db(transaction=True)
def test_parallel_verification_counts_every_event_once():
    append_events(10)
    result = verify_chain(jobs=4, parallel_min_events=0)
    assert (result.is_valid, result.total_checked, result.head_id) == (True, 10, 10)


def test_inside_a_transaction_the_chain_is_verified_in_one_pass():
    # Processes of their own would not see this transaction's rows: one pass, in it, sees them all.
    append_events(6)
    assert verify_chain(jobs=3, parallel_min_events=0).total_checked == 6


@pytest.mark.django_db(transaction=True)
def test_verify_command_takes_a_number_of_jobs():
    append_events(6)
    with triggers_disabled() as cursor:
        cursor.execute("UPDATE audit_auditevent SET action = 'x' WHERE id = 5")
    code, output = run_verify_command("--jobs", "3")
    assert code == 1 and "#5" in output
    with pytest.raises(CommandError, match="at least 1"):
        run_verify_command("--jobs", "0")
