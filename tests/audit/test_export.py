"""export_audit writes JSON Lines that verify_audit_chain --file verifies offline."""

import io
import json
import sys
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone

from audit.chain import EVENT_COLUMNS, compute_hash
from audit.models import AuditEvent
from audit.services import audit_checkpoint_create
from tests.audit.helpers import append_events

pytestmark = pytest.mark.django_db


def export(tmp_path, since) -> list[str]:
    path = tmp_path / "audit.jsonl"
    call_command("export_audit", "--since", since.isoformat(), "--output", str(path), stderr=StringIO())
    return path.read_text().splitlines()


def verify_file(tmp_path, lines) -> tuple[int, str]:
    path = tmp_path / "check.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return verify_path(path)


def verify_path(path) -> tuple[int, str]:
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit_chain", "--file", str(path), stdout=out, stderr=err)
    except SystemExit as exit_:
        return exit_.code, err.getvalue()
    return 0, out.getvalue()


def kinds(lines) -> list:
    """Each line's record kind, with the event ids: ["header", 1, 2, ..., "checkpoint"]."""
    return [record.get("record") or record["id"] for record in map(json.loads, lines)]


def rehash(records: list[dict]) -> None:
    """An attacker's rewrite of exported events: recompute every hash and link from the first one's link."""
    previous = records[0]["previous_hash"]
    for record in records:
        record["previous_hash"] = previous
        record["hash"] = compute_hash(**{c: record[c] for c in EVENT_COLUMNS[:-2]}, previous_hash=previous)
        previous = record["hash"]


def test_full_export_verifies_offline(tmp_path):
    append_events(4)
    audit_checkpoint_create()
    lines = export(tmp_path, timezone.now() - timedelta(days=1))
    # The signed header, 5 events (one is the checkpoint's, already the head: no new one), its checkpoint.
    assert kinds(lines) == ["header", 1, 2, 3, 4, 5, "checkpoint"]
    code, output = verify_file(tmp_path, lines)
    assert code == 0 and "5 events verified" in output


def test_export_header_names_its_first_and_last_event_and_its_parameters(tmp_path):
    events = append_events(3)
    lines = export(tmp_path, events[1].timestamp)
    header, checkpoint = json.loads(lines[0]), json.loads(lines[-1])
    # The export signed the head first (event 4) and ends exactly there.
    assert kinds(lines) == ["header", 2, 3, 4, "checkpoint"]
    assert (header["first_id"], header["first_previous_hash"]) == (2, events[0].hash)
    assert (header["last_id"], header["last_hash"]) == (checkpoint["event_id"], checkpoint["event_hash"])
    assert header["since"] == events[1].timestamp.isoformat(timespec="microseconds")
    assert AuditEvent.objects.get(id=4).event_type == "audit.checkpoint"


def test_export_since_a_later_time_is_anchored_on_its_first_event(tmp_path):
    append_events(3)
    cut = timezone.now()
    append_events(2)
    lines = export(tmp_path, cut)
    assert kinds(lines) == ["header", 4, 5, 6, "checkpoint"]
    assert verify_file(tmp_path, lines)[0] == 0


def test_export_with_no_event_since_holds_only_its_header_and_verifies(tmp_path):
    append_events(2)
    lines = export(tmp_path, timezone.now() + timedelta(days=1))
    assert kinds(lines) == ["header"]
    code, output = verify_file(tmp_path, lines)
    assert code == 0 and "0 events verified" in output


def test_export_to_stdout(capsys):
    append_events(2)
    call_command("export_audit", "--since", "2000-01-01T00:00:00Z", stderr=StringIO())
    assert kinds(capsys.readouterr().out.splitlines()) == ["header", 1, 2, 3, "checkpoint"]


class _CheckpointDuringExport(io.StringIO):
    """Standard output that, at the export's first line, records an event and signs it, as the beat would."""

    fired = False

    def write(self, text):
        if not self.fired:
            self.fired = True
            append_events(1)
            audit_checkpoint_create()
        return super().write(text)


def test_export_racing_a_checkpoint_verifies(tmp_path, monkeypatch):
    append_events(3)
    racing = _CheckpointDuringExport()
    monkeypatch.setattr(sys, "stdout", racing)
    call_command("export_audit", "--since", "2000-01-01T00:00:00Z", stderr=StringIO())
    monkeypatch.undo()
    lines = racing.getvalue().splitlines()
    # Events 5 and 6 and the checkpoint of 6 came after the export's own checkpoint (event 4).
    assert AuditEvent.objects.count() == 6
    assert kinds(lines) == ["header", 1, 2, 3, 4, "checkpoint"]
    code, output = verify_file(tmp_path, lines)
    assert code == 0 and "4 events verified" in output


def test_export_requires_an_aware_datetime():
    with pytest.raises(CommandError):
        call_command("export_audit", "--since", "last tuesday")


def test_edited_line_in_an_export_is_reported(tmp_path):
    append_events(4)
    lines = export(tmp_path, timezone.now() - timedelta(days=1))
    record = json.loads(lines[3])
    record["actor_name"] = "mallory"
    lines[3] = json.dumps(record)
    code, output = verify_file(tmp_path, lines)
    assert code == 1 and "#3" in output


def test_removed_line_in_an_export_is_reported(tmp_path):
    append_events(4)
    lines = export(tmp_path, timezone.now() - timedelta(days=1))
    del lines[2]
    code, output = verify_file(tmp_path, lines)
    assert code == 1 and "#2 is missing" in output


def test_cut_tail_of_an_export_is_reported(tmp_path):
    append_events(4)
    lines = export(tmp_path, timezone.now() - timedelta(days=1))  # header, 1..5 (5 signed), checkpoint
    code, output = verify_file(tmp_path, lines[:4] + lines[-1:])
    assert code == 1 and "first bad event #4" in output


@pytest.mark.parametrize("keep_header", [True, False])
def test_export_with_every_event_line_removed_is_reported(tmp_path, keep_header):
    append_events(4)
    audit_checkpoint_create()  # signs event 5
    lines = export(tmp_path, timezone.now() - timedelta(days=1))
    checkpoints = [line for line in lines if json.loads(line).get("record") == "checkpoint"]
    kept = lines[:1] + checkpoints if keep_header else checkpoints
    code, output = verify_file(tmp_path, kept)
    assert code == 1
    no_header = "line 1: the file does not start with a signed export header"
    assert ("first bad event #1" if keep_header else no_header) in output


def test_checkpoint_of_an_event_outside_the_export_is_reported(tmp_path):
    append_events(2)
    earlier = export(tmp_path, timezone.now() - timedelta(days=1))  # 1..3, checkpoint of 3
    cut = timezone.now()
    append_events(2)
    later = export(tmp_path, cut)  # 4..6, checkpoint of 6
    code, output = verify_file(tmp_path, later + earlier[-1:])
    assert code == 1 and "a checkpoint names event #3, outside the export's events #4 to #6" in output


def test_export_with_its_first_events_cut_is_reported(tmp_path):
    append_events(4)
    lines = export(tmp_path, timezone.now() - timedelta(days=1))
    code, output = verify_file(tmp_path, lines[:1] + lines[4:])  # events 1..3 cut
    assert code == 1 and "first bad event #1: event #1 is missing" in output
    code, output = verify_file(tmp_path, lines[4:])  # the header too
    assert code == 1 and "line 1: the file does not start with a signed export header" in output


def test_edited_export_header_is_reported(tmp_path):
    append_events(4)
    lines = export(tmp_path, timezone.now() - timedelta(days=1))
    header = json.loads(lines[0])
    header.update(first_id=4, first_previous_hash=json.loads(lines[4])["previous_hash"])
    code, output = verify_file(tmp_path, [json.dumps(header)] + lines[4:])
    assert code == 1 and "the export header has an invalid signature" in output


def test_export_rewritten_without_its_checkpoint_lines_is_reported(tmp_path):
    append_events(4)
    audit_checkpoint_create()  # signs event 5
    lines = export(tmp_path, timezone.now() - timedelta(days=1))
    records = [json.loads(line) for line in lines[1:] if json.loads(line).get("record") != "checkpoint"]
    records[1]["actor_id"] = "framed"  # event 2
    rehash(records)
    code, output = verify_file(tmp_path, lines[:1] + [json.dumps(r, sort_keys=True) for r in records])
    assert code == 1 and "event #5 does not match the hash the export header signs" in output


def test_export_tail_rewritten_after_its_last_kept_checkpoint_is_reported(tmp_path):
    append_events(3)
    audit_checkpoint_create()  # signs event 4
    append_events(3)  # 5..7; the export signs 8
    lines = export(tmp_path, timezone.now() - timedelta(days=1))
    assert kinds(lines) == ["header", 1, 2, 3, 4, 5, 6, 7, 8, "checkpoint", "checkpoint"]
    records = [json.loads(line) for line in lines[1:9]]
    records[5]["actor_id"] = "framed"  # event 6, after the checkpoint of 4
    rehash(records[4:])
    rewritten = lines[:1] + [json.dumps(r, sort_keys=True) for r in records] + lines[9:10]  # the 8's dropped
    code, output = verify_file(tmp_path, rewritten)
    assert code == 1 and "first bad event #8" in output


def test_events_added_after_the_end_of_an_export_are_reported(tmp_path):
    append_events(2)
    lines = export(tmp_path, timezone.now() - timedelta(days=1))  # 1..3
    extra = json.loads(lines[3])
    extra.update(id=4, event_id="3f1d2c4b-0000-4000-8000-000000000004", previous_hash=extra["hash"])
    rehash([extra])
    code, output = verify_file(tmp_path, lines[:4] + [json.dumps(extra)] + lines[4:])
    assert code == 1 and "event #4 is beyond the export's last event (#3)" in output


def test_export_checkpoint_under_another_key_is_reported(tmp_path):
    append_events(2)
    audit_checkpoint_create()
    lines = export(tmp_path, timezone.now() - timedelta(days=1))
    with override_settings(ELSA_AUDIT_CHECKPOINT_KEY="another-key-of-at-least-thirty-two-chars"):
        code, output = verify_file(tmp_path, lines)
    assert code == 1 and "invalid signature" in output


def test_export_lines_hold_every_hashed_field(tmp_path):
    event = append_events(1)[0]
    record = json.loads(export(tmp_path, timezone.now() - timedelta(days=1))[1])
    assert record["hash"] == event.hash and record["event_id"] == str(event.event_id)
    assert AuditEvent.objects.count() == 2  # and the export's checkpoint


@pytest.mark.parametrize(
    "change",
    [
        {"id": "2"},
        {"context": '{"n": 1}'},
        {"timestamp": 12},
    ],
)
def test_malformed_line_in_an_export_is_reported(tmp_path, change):
    append_events(3)
    lines = export(tmp_path, timezone.now() - timedelta(days=1))
    record = json.loads(lines[2])
    record.update(change)
    lines[2] = json.dumps(record)
    code, output = verify_file(tmp_path, lines)
    assert code == 1 and "#2" in output


def test_export_line_that_is_not_json_is_reported(tmp_path):
    append_events(2)
    lines = export(tmp_path, timezone.now() - timedelta(days=1))
    lines[1] = "{not json"
    code, output = verify_file(tmp_path, lines)
    assert code == 1 and "line 2: not a JSON line" in output


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[1]", "not a JSON object"),
        ("null", "not a JSON object"),
        ('"text"', "not a JSON object"),
        ('{"record": "checkpoint", "event_hash": "a", "created": "b", "signature": "c"}', "lacks 'event_id'"),
        ('{"record": "checkpoint", "event_id": "3", "event_hash": "a", "created": "b", "signature": "c"}', "type"),
        ('{"record": "checkpoint", "event_id": 3, "event_hash": "\u00e9", "created": "b", "signature": "c"}', "ASCII"),
        ('{"record": "trailer"}', "not an event, header or checkpoint record"),
        ('{"id": 2}', "the event lacks 'event_id'"),
    ],
)
def test_malformed_export_line_is_reported_with_its_number(tmp_path, line, reason):
    append_events(2)
    lines = export(tmp_path, timezone.now() - timedelta(days=1))
    lines.insert(2, line)
    code, output = verify_file(tmp_path, lines)
    assert code == 1 and "line 3: " in output and reason in output


def test_second_export_header_is_reported(tmp_path):
    append_events(2)
    lines = export(tmp_path, timezone.now() - timedelta(days=1))
    code, output = verify_file(tmp_path, lines[:2] + lines)
    assert code == 1 and "line 3: an export header that is not the file's first record" in output


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        ('{"record": "header", "format": 1}', "line 1: the header record lacks 'since'"),
        ('{"record": "header", "format": true, "since": ""}', "line 1: the header record has a 'format' of the wrong"),
        (None, "the file holds no signed export header"),
    ],
)
def test_malformed_or_missing_export_header_is_reported(tmp_path, first, reason):
    code, output = verify_file(tmp_path, [first] if first else [])
    assert code == 1 and reason in output


def test_export_line_that_is_not_utf8_is_reported(tmp_path):
    append_events(1)
    lines = export(tmp_path, timezone.now() - timedelta(days=1))
    path = tmp_path / "check.jsonl"
    path.write_bytes(lines[0].encode() + b"\n\xff\xfe{}\n")
    code, output = verify_path(path)
    assert code == 1 and "line 2: not a JSON line" in output


def test_verifying_a_missing_file_is_a_command_error(tmp_path):
    with pytest.raises(CommandError, match="cannot read"):
        call_command("verify_audit_chain", "--file", str(tmp_path / "absent.jsonl"))
