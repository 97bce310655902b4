"""Freshness: the beat signs the head at least once per interval, and verification fails when the newest
signed checkpoint is too old (a tail cut back to an old checkpoint, the checkpoints after it deleted)."""

import re
from datetime import datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from audit.chain import canonical_timestamp
from audit.models import AuditCheckpoint, AuditEvent
from audit.services import audit_checkpoint_create
from audit.verification import chain_freshness, verify_chain
from tests.audit.helpers import append_events, sign_checkpoint, triggers_disabled
from tests.identity.factories import principal_headers

pytestmark = pytest.mark.django_db

UNSIGNED_WARNING = "audit chain unsigned for longer than ELSA_AUDIT_CHECKPOINT_MAX_AGE_SECONDS"
LIST = "/elsa/api/audit-events"


def run_verify_command(*args) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit_chain", "--jobs", "1", *args, stdout=out, stderr=err)
    except SystemExit as exit_:
        return exit_.code, out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def signed_an_hour_ago_then_cut_back() -> AuditCheckpoint:
    """Events 1-3 signed an hour ago, events after them signed now; then an attacker deletes every
    checkpoint after the old one and cuts the tail back to it, which leaves a chain that verifies."""
    old = sign_checkpoint(append_events(3)[-1], timezone.now() - timedelta(hours=1))
    append_events(3)
    audit_checkpoint_create()  # event 7, signed now
    with triggers_disabled() as cursor:
        cursor.execute("DELETE FROM audit_auditcheckpoint WHERE event_id > 3")
        cursor.execute("DELETE FROM audit_auditevent WHERE id > 3")
    assert verify_chain().is_valid  # what the chain alone cannot show
    return old


def test_unmoved_head_is_signed_again_after_half_an_interval_without_a_new_event():
    head = append_events(2)[-1]
    old = sign_checkpoint(head, timezone.now() - timedelta(seconds=40))  # the interval is 60 s
    heartbeat = audit_checkpoint_create()
    assert heartbeat.pk != old.pk
    assert (heartbeat.event_id, heartbeat.event_hash) == (head.id, head.hash)
    assert timezone.now() - heartbeat.created < timedelta(seconds=30)
    assert AuditEvent.objects.count() == 2  # an idle chain does not grow
    assert audit_checkpoint_create().pk == heartbeat.pk  # less than half an interval later: nothing new
    assert AuditCheckpoint.objects.count() == 2
    assert verify_chain().is_valid


def test_unmoved_head_signed_less_than_half_an_interval_ago_is_not_signed_again(settings):
    head = append_events(1)[-1]
    recent = sign_checkpoint(head, timezone.now() - timedelta(seconds=5))
    assert audit_checkpoint_create().pk == recent.pk  # the interval is 60 s
    settings.ELSA_AUDIT_CHECKPOINT_INTERVAL_SECONDS = 8.0  # now 5 s is more than half of it
    assert audit_checkpoint_create().pk != recent.pk


def test_signing_after_an_unsigned_period_longer_than_the_max_age_is_logged(caplog):
    head = append_events(1)[-1]
    sign_checkpoint(head, timezone.now() - timedelta(hours=1))
    append_events(1)
    with caplog.at_level("WARNING", logger="elsa.audit"):
        audit_checkpoint_create()
    (record,) = [r for r in caplog.records if r.getMessage() == UNSIGNED_WARNING]
    assert record.audit_checkpoint_event_id == head.id
    assert 3590 < record.audit_unsigned_seconds < 3700
    caplog.clear()
    with caplog.at_level("WARNING", logger="elsa.audit"):
        audit_checkpoint_create()  # right after: nothing to report
    assert not [r for r in caplog.records if r.getMessage() == UNSIGNED_WARNING]


@pytest.mark.postgres
def test_tail_cut_back_to_an_old_checkpoint_with_the_checkpoints_after_it_is_stale():
    old = signed_an_hour_ago_then_cut_back()
    code, out, err = run_verify_command()
    assert code == 1 and out == ""
    assert err.startswith("audit chain STALE (database): 3 events verified, head #3 in ")
    signed = re.escape(canonical_timestamp(old.created))
    # 3600 s and the test's own run time so far.
    assert re.search(rf"the newest signed checkpoint \(of event #3, signed {signed}\) is 36\d\ds old", err)
    assert "more than the allowed 300s" in err


@pytest.mark.postgres
def test_cut_chain_signed_again_by_the_beat_verifies_with_a_warning_naming_the_unsigned_period():
    old = signed_an_hour_ago_then_cut_back()
    heartbeat = audit_checkpoint_create()  # the next beat signs the cut head again
    assert heartbeat.event_id == 3
    code, out, err = run_verify_command()
    assert code == 0 and "audit chain OK (database): 3 events verified" in out
    assert "warning: 1 earlier period(s) longer than 300s without a signed checkpoint" in err
    unsigned = (heartbeat.created - old.created).total_seconds()
    assert 3600 <= unsigned < 3700
    assert (
        f"warning: no signed checkpoint from {canonical_timestamp(old.created)} (the checkpoint of event #3) "
        f"to {canonical_timestamp(heartbeat.created)} (a checkpoint of event #3), {unsigned:.0f}s"
    ) in err


@pytest.mark.postgres
def test_verify_endpoint_warns_that_a_cut_back_chain_is_stale(api_client):
    old = signed_an_hour_ago_then_cut_back()
    response = api_client.get(f"{LIST}/2/verify", **principal_headers("read:audit-events"))
    assert response.status_code == 200
    body = response.json()
    # The event's own segment is proven; the warning is beside it.
    assert (body["is_valid"], body["first_invalid_id"], body["is_fresh"]) == (True, None, False)
    assert body["newest_checkpoint"]["event_id"] == 3
    assert datetime.fromisoformat(body["newest_checkpoint"]["created"]) == old.created
    assert "the newest signed checkpoint (of event #3" in body["freshness_reason"]


def test_verify_endpoint_of_a_freshly_signed_chain_is_fresh(api_client):
    reader = principal_headers("read:audit-events")
    append_events(2)
    body = api_client.get(f"{LIST}/1/verify", **reader).json()
    # No checkpoint yet, but the oldest event is recent: a server just installed.
    assert (body["is_valid"], body["is_fresh"], body["newest_checkpoint"], body["freshness_reason"]) == (
        True,
        True,
        None,
        "",
    )
    checkpoint = audit_checkpoint_create()
    body = api_client.get(f"{LIST}/1/verify", **reader).json()
    assert (body["is_fresh"], body["newest_checkpoint"]["event_id"]) == (True, checkpoint.event_id)


def test_chain_never_signed_whose_oldest_event_is_older_than_the_max_age_is_stale(settings):
    append_events(2)
    settings.ELSA_AUDIT_CHECKPOINT_MAX_AGE_SECONDS = 0.000001  # the events are older than that by now
    code, _, err = run_verify_command()
    assert code == 1
    assert "audit chain STALE (database): 2 events verified" in err
    assert "no signed checkpoint covers the chain, and its oldest stored event (#1, recorded" in err


def test_empty_chain_is_fresh_however_small_the_max_age(settings):
    settings.ELSA_AUDIT_CHECKPOINT_MAX_AGE_SECONDS = 0.000001
    assert run_verify_command()[0] == 0


def test_stopped_beat_fails_verification_unless_a_longer_age_is_allowed():
    sign_checkpoint(append_events(2)[-1], timezone.now() - timedelta(minutes=10))
    code, _, err = run_verify_command()
    assert code == 1 and "or the audit.checkpoint beat has not run since" in err
    # A restored backup, or a beat stopped on purpose: the operator allows the age it has.
    code, out, err = run_verify_command("--max-checkpoint-age", "3600")
    assert code == 0 and "audit chain OK (database): 2 events verified" in out and err == ""


def test_max_checkpoint_age_must_be_positive_and_is_for_the_database_only(tmp_path):
    with pytest.raises(CommandError, match="positive"):
        run_verify_command("--max-checkpoint-age", "0")
    with pytest.raises(CommandError, match="not to --file"):
        run_verify_command("--max-checkpoint-age", "60", "--file", str(tmp_path / "audit.jsonl"))


def test_export_file_is_verified_without_a_freshness_check(settings, tmp_path):
    # An archive is old by design; its signed header proves where it ends.
    append_events(2)
    path = tmp_path / "audit.jsonl"
    since = (timezone.now() - timedelta(days=1)).isoformat()
    call_command("export_audit", "--since", since, "--output", str(path), stderr=StringIO())
    settings.ELSA_AUDIT_CHECKPOINT_MAX_AGE_SECONDS = 0.000001
    code, out, _ = run_verify_command("--file", str(path))
    assert code == 0 and "audit chain OK" in out


@pytest.mark.postgres
def test_forged_recent_checkpoint_does_not_make_a_stale_chain_fresh():
    head = append_events(2)[-1]
    sign_checkpoint(head, timezone.now() - timedelta(hours=1))
    with triggers_disabled() as cursor:
        cursor.execute(
            "INSERT INTO audit_auditcheckpoint (event_id, event_hash, created, signature) VALUES (%s, %s, now(), %s)",
            [head.id, head.hash, "0" * 64],
        )
    freshness = chain_freshness(history=True)
    assert not freshness.is_fresh and re.search(r"is 36\d\ds old", freshness.reason)
    assert not chain_freshness().is_fresh


def test_chain_first_signed_long_after_its_oldest_event_reports_that_period():
    # As after every checkpoint was deleted, the tail cut and the chain signed again (here: a first
    # checkpoint two hours after the first event): only the oldest stored event's time shows the gap.
    events = append_events(2)
    checkpoint = sign_checkpoint(events[-1], events[0].timestamp + timedelta(hours=2))
    (period,) = chain_freshness(history=True).unsigned_periods
    assert (period.start, period.start_event_id, period.start_is_checkpoint) == (events[0].timestamp, 1, False)
    assert (period.end, period.end_event_id, period.seconds) == (checkpoint.created, 2, 7200)


def test_purged_chain_reports_no_unsigned_period_for_its_older_checkpoints(tmp_path):
    append_events(3)
    path = tmp_path / "archive.jsonl"
    since = (timezone.now() - timedelta(days=1)).isoformat()
    call_command("export_audit", "--since", since, "--output", str(path), stderr=StringIO())
    call_command("purge_audit", "--through", "4", "--archive", str(path), stdout=StringIO())
    code, out, err = run_verify_command()
    assert code == 0 and "1 events verified, head #5" in out and err == ""


def test_only_the_latest_unsigned_periods_are_listed(monkeypatch):
    from audit.management.commands import verify_audit_chain

    monkeypatch.setattr(verify_audit_chain, "SHOWN_PERIODS", 2)
    head = append_events(1)[-1]
    started = timezone.now() - timedelta(hours=4)
    for hours in range(4):  # four checkpoints an hour apart, then one now: four unsigned periods
        sign_checkpoint(head, started + timedelta(hours=hours))
    audit_checkpoint_create()
    code, _, err = run_verify_command()
    assert code == 0
    lines = err.splitlines()
    assert lines[0].startswith("warning: 4 earlier period(s) longer than 300s")
    assert lines[1] == "warning: ... 2 earlier one(s), then:"
    assert len(lines) == 4 and all("no signed checkpoint from" in line for line in lines[2:])
    assert canonical_timestamp(started + timedelta(hours=3)) in lines[3]
