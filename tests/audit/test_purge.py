"""purge_audit: delete archived events through a signed checkpoint; the chain is then verified from it."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import ProgrammingError, connection, transaction
from django.utils import timezone

from audit.chain import EVENT_COLUMNS, compute_hash
from audit.models import AuditCheckpoint, AuditEvent
from audit.services import audit_checkpoint_create
from audit.verification import load_anchors, verify_chain, verify_event
from tests.audit.helpers import append_events, triggers_disabled
from tests.identity.factories import principal_headers

pytestmark = pytest.mark.django_db

LIST = "/elsa/api/audit-events"
EPOCH = timezone.now() - timedelta(days=1)


def export(tmp_path, name: str = "archive.jsonl"):
    """export_audit of every event: it signs the head and ends there; returns the file and that event's id."""
    path = tmp_path / name
    call_command("export_audit", "--since", EPOCH.isoformat(), "--output", str(path), stderr=StringIO())
    return path, AuditCheckpoint.objects.order_by("-id").first().event_id


def purge(through: int, archive) -> str:
    out = StringIO()
    call_command("purge_audit", "--through", str(through), "--archive", str(archive), stdout=out)
    return out.getvalue()


def run_verify_command() -> tuple[int, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit_chain", "--jobs", "1", stdout=out, stderr=err)
    except SystemExit as exit_:
        return exit_.code, err.getvalue()
    return 0, out.getvalue()


def test_purge_deletes_the_archived_events_and_the_chain_verifies_from_the_anchor(tmp_path):
    append_events(4)
    archive, through = export(tmp_path)  # event 5 is the export's signed checkpoint
    assert through == 5
    assert "purged 5 audit events through #5" in purge(through, archive)
    assert list(AuditEvent.objects.values_list("id", flat=True)) == [6]
    event = AuditEvent.objects.get(id=6)
    assert (event.event_type, event.action, event.actor_type, event.actor_id) == (
        "audit.purged",
        "purged",
        "system",
        "purge_audit",
    )
    anchor = AuditCheckpoint.objects.get(event_id=5)
    assert event.previous_hash == anchor.event_hash
    assert event.context == {"through_id": 5, "through_hash": anchor.event_hash, "first_id": 1, "deleted": 5}
    result = verify_chain()
    assert (result.is_valid, result.total_checked, result.head_id) == (True, 1, 6)
    assert verify_event(6).is_valid
    code, output = run_verify_command()
    assert code == 0 and "1 events verified, head #6" in output


def test_events_chained_after_the_export_are_kept_and_verify(tmp_path):
    append_events(3)
    archive, through = export(tmp_path)  # signs event 4
    append_events(3)  # events 5-7, chained after the export
    purge(through, archive)
    assert list(AuditEvent.objects.values_list("id", flat=True)) == [5, 6, 7, 8]
    assert AuditEvent.objects.get(id=8).event_type == "audit.purged"
    result = verify_chain()
    assert (result.is_valid, result.total_checked, result.head_id) == (True, 4, 8)
    assert all(verify_event(event_id).is_valid for event_id in (5, 6, 7, 8))
    # The next export starts at the first kept event and verifies on its own; so does a second purge.
    second, through = export(tmp_path, "second.jsonl")
    purge(through, second)
    assert verify_chain().is_valid
    assert AuditEvent.objects.order_by("id").first().id == through + 1


def test_purge_through_an_event_without_a_checkpoint_is_refused(tmp_path):
    append_events(4)
    archive, _ = export(tmp_path)  # signs event 5; event 3 has no checkpoint
    with pytest.raises(CommandError, match="No validly signed checkpoint names event #3"):
        purge(3, archive)
    assert AuditEvent.objects.count() == 5
    assert verify_chain().is_valid


def test_purge_through_a_checkpoint_with_a_forged_signature_is_refused(tmp_path):
    append_events(2)
    archive, through = export(tmp_path)
    with triggers_disabled() as cursor:
        cursor.execute("UPDATE audit_auditcheckpoint SET signature = repeat('0', 64) WHERE event_id = %s", [through])
    with pytest.raises(CommandError, match="No validly signed checkpoint"):
        purge(through, archive)
    assert AuditEvent.objects.count() == 3


def test_archive_of_another_chain_is_refused(tmp_path):
    append_events(4)
    archive, through = export(tmp_path)  # signs event 5
    with connection.cursor() as cursor:
        # Test databases allow TRUNCATE (see migration 0001): another chain, of the same length, takes its place.
        cursor.execute("TRUNCATE audit_auditevent, audit_auditcheckpoint")
    append_events(4, context={"other": "chain"})
    assert audit_checkpoint_create().event_id == through
    with pytest.raises(CommandError, match="does not match the database's"):
        purge(through, archive)
    assert AuditEvent.objects.count() == 5


def test_archive_that_does_not_verify_is_refused(tmp_path):
    append_events(3)
    archive, through = export(tmp_path)
    lines = archive.read_text().splitlines()
    lines[2] = lines[2].replace('"started"', '"edited"')
    archive.write_text("\n".join(lines) + "\n")
    with pytest.raises(CommandError, match="does not verify: event #2 does not match its hash"):
        purge(through, archive)
    assert AuditEvent.objects.count() == 4


def test_archive_not_holding_the_event_or_the_events_before_it_is_refused(tmp_path):
    append_events(3)
    archive, through = export(tmp_path)  # events 1-4
    append_events(2)
    with pytest.raises(CommandError, match="does not hold event #6"):
        purge(6, archive)
    later = timezone.now()
    append_events(1)
    partial = tmp_path / "partial.jsonl"
    call_command("export_audit", "--since", later.isoformat(), "--output", str(partial), stderr=StringIO())
    # From event 7 only: events 1-6 would be deleted without being in it.
    with pytest.raises(CommandError, match="events #1 to #6 are not in it"):
        purge(AuditCheckpoint.objects.order_by("-id").first().event_id, partial)
    assert AuditEvent.objects.order_by("id").first().id == 1
    with pytest.raises(CommandError, match="cannot read"):
        purge(through, tmp_path / "missing.jsonl")


@pytest.mark.postgres
def test_deleting_the_first_kept_event_after_a_purge_is_reported(tmp_path):
    append_events(3)
    archive, through = export(tmp_path)  # signs event 4
    append_events(2)  # events 5 and 6
    purge(through, archive)  # event 7 records the purge
    with triggers_disabled() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE id = 5")
    result = verify_chain()
    assert (result.is_valid, result.first_invalid_id) == (False, 6)
    assert "no signed checkpoint names event #5" in result.reason
    assert verify_event(6).first_invalid_id == 6
    code, output = run_verify_command()
    assert code == 1 and "first bad event #6" in output


@pytest.mark.postgres
def test_head_cut_at_a_checkpoint_without_a_purge_is_reported():
    # An attacker deleting events up to a signed checkpoint, without purge_audit: no audit.purged event.
    append_events(3)
    audit_checkpoint_create()  # signs event 4
    append_events(2)
    with triggers_disabled() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE id <= 4")
    result = verify_chain()
    assert (result.is_valid, result.first_invalid_id) == (False, 5)
    assert "no audit.purged event records a purge through event #4" in result.reason


@pytest.mark.postgres
def test_edited_anchor_checkpoint_is_reported(tmp_path):
    append_events(3)
    archive, through = export(tmp_path)
    append_events(1)
    purge(through, archive)
    with triggers_disabled() as cursor:
        cursor.execute("UPDATE audit_auditcheckpoint SET event_hash = repeat('a', 64) WHERE event_id = %s", [through])
    result = verify_chain()
    assert (result.is_valid, result.first_invalid_id) == (False, through + 1)
    assert f"the checkpoint of event #{through}, has an invalid signature" in result.reason
    assert not verify_event(through + 1).is_valid


@pytest.mark.postgres
def test_first_kept_event_relinked_away_from_the_anchor_is_reported(tmp_path):
    append_events(2)
    archive, through = export(tmp_path)
    purge(through, archive)
    with triggers_disabled() as cursor:
        cursor.execute("UPDATE audit_auditevent SET previous_hash = repeat('b', 64) WHERE id = %s", [through + 1])
    result = verify_chain()
    assert (result.is_valid, result.first_invalid_id) == (False, through + 1)
    assert "does not link to the signed checkpoint" in result.reason


def test_verify_endpoint_gives_404_for_a_purged_event_and_verifies_kept_ones(api_client, tmp_path):
    reader = principal_headers("read:audit-events")
    append_events(3)
    archive, through = export(tmp_path)  # signs event 4
    append_events(1)  # event 5
    purge(through, archive)  # event 6
    for purged in (1, through):
        response = api_client.get(f"{LIST}/{purged}/verify", **reader)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        assert "purged" in response.json()["error"]["message"]
    for kept in (5, 6):
        body = api_client.get(f"{LIST}/{kept}/verify", **reader).json()
        assert (body["is_valid"], body["first_invalid_id"]) == (True, None)


@pytest.mark.postgres
def test_verify_endpoint_reports_a_cut_head_instead_of_404(api_client):
    reader = principal_headers("read:audit-events")
    append_events(5)
    with triggers_disabled() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE id <= 2")
    for event_id in (1, 4):
        body = api_client.get(f"{LIST}/{event_id}/verify", **reader).json()
        assert (body["is_valid"], body["first_invalid_id"]) == (False, 3)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "setting",
    [
        None,  # no setting at all
        "'1:1000'",  # a transaction id that is not this one's
        "pg_current_xact_id()::text || ':2'",  # this transaction's, but event 3 is beyond its bound
    ],
)
def test_event_delete_is_refused_outside_a_purge(setting):
    append_events(4)
    with connection.cursor() as cursor:
        if setting is not None:
            cursor.execute(f"SELECT set_config('elsa.audit_purge', {setting}, true)")
        with pytest.raises(ProgrammingError, match="append-only"), transaction.atomic():
            cursor.execute("DELETE FROM audit_auditevent WHERE id = 3")
    assert AuditEvent.objects.count() == 4


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_purge_setting_left_in_a_session_allows_no_later_delete():
    append_events(2)
    with connection.cursor() as cursor:
        # Session-wide (not transaction-local) in one autocommit statement: the DELETE that follows
        # is another transaction, with another id.
        cursor.execute("SELECT set_config('elsa.audit_purge', pg_current_xact_id()::text || ':100', false)")
        try:
            with pytest.raises(ProgrammingError, match="append-only"):
                cursor.execute("DELETE FROM audit_auditevent WHERE id = 1")
        finally:
            cursor.execute("RESET elsa.audit_purge")
    assert AuditEvent.objects.count() == 2


@pytest.mark.postgres
def test_checkpoints_cannot_be_deleted_during_a_purge():
    append_events(2)
    audit_checkpoint_create()
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('elsa.audit_purge', pg_current_xact_id()::text || ':100', true)")
        with pytest.raises(ProgrammingError, match="append-only"), transaction.atomic():
            cursor.execute("DELETE FROM audit_auditcheckpoint")
    assert AuditCheckpoint.objects.count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_parallel_verification_starts_at_the_purge_anchor(tmp_path):
    append_events(5)
    archive, through = export(tmp_path)  # signs event 6
    append_events(9)
    purge(through, archive)
    one_pass = verify_chain()
    assert (one_pass.is_valid, one_pass.total_checked) == (True, 10)
    assert verify_chain(jobs=3, parallel_min_events=0) == one_pass
    with triggers_disabled() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE id = %s", [through + 1])
    one_pass = verify_chain()
    assert one_pass.first_invalid_id == through + 2
    assert verify_chain(jobs=3, parallel_min_events=0) == one_pass


def test_purge_signs_its_own_purged_event_before_it_returns(tmp_path, django_capture_on_commit_callbacks):
    append_events(2)
    archive, through = export(tmp_path)  # signs event 3
    with django_capture_on_commit_callbacks() as callbacks:
        purge(through, archive)
    purged = AuditEvent.objects.get(event_type="audit.purged")
    # The head right after the purge is its own event, and a validly signed checkpoint names it.
    assert AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() == purged.id
    newest = AuditCheckpoint.objects.order_by("-id").first()
    assert (newest.event_id, newest.event_hash) == (purged.id, purged.hash)
    signed = AuditCheckpoint.objects.filter(event_id=purged.id)
    rows = signed.values_list("event_id", "event_hash", "created", "signature")
    assert load_anchors(rows).hashes == {purged.id: purged.hash}
    assert len(callbacks) == 1  # its copy in the log stream, once the purge commits
    assert verify_chain().is_valid


@pytest.mark.postgres
def test_rewritten_purge_event_is_reported_at_once(tmp_path):
    # Before the purge signed its own event, a rewrite of its record (here: another actor and count,
    # rehashed) verified until the next beat signed the head.
    append_events(3)
    archive, through = export(tmp_path)
    purge(through, archive)  # event 5
    with triggers_disabled() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET actor_id = 'someone-else', "
            "context = jsonb_set(context, '{deleted}', '1') WHERE id = 5"
        )
        event = AuditEvent.objects.get(id=5)
        fields = {f: getattr(event, f) for f in EVENT_COLUMNS[:-1]}
        cursor.execute("UPDATE audit_auditevent SET hash = %s WHERE id = 5", [compute_hash(**fields)])
    result = verify_chain()
    assert (result.is_valid, result.first_invalid_id) == (False, 5)
    assert "differs from its signed checkpoint" in result.reason
