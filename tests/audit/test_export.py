"""export_audit writes JSON Lines that verify_audit_chain --file verifies offline."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone

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
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit_chain", "--file", str(path), stdout=out, stderr=err)
    except SystemExit as exit_:
        return exit_.code, err.getvalue()
    return 0, out.getvalue()


def test_full_export_verifies_offline(tmp_path):
    append_events(4)
    audit_checkpoint_create()
    lines = export(tmp_path, timezone.now() - timedelta(days=1))
    assert len(lines) == 6  # 5 events (one is the checkpoint's) + 1 checkpoint line
    assert json.loads(lines[-1])["record"] == "checkpoint"
    code, output = verify_file(tmp_path, lines)
    assert code == 0 and "5 events verified" in output


def test_export_since_a_later_time_is_anchored_on_its_first_event(tmp_path):
    append_events(3)
    cut = timezone.now()
    append_events(2)
    lines = export(tmp_path, cut)
    assert [json.loads(line)["id"] for line in lines] == [4, 5]
    assert verify_file(tmp_path, lines)[0] == 0


def test_export_to_stdout(capsys):
    append_events(2)
    call_command("export_audit", "--since", "2000-01-01T00:00:00Z", stderr=StringIO())
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == [1, 2]


def test_export_requires_an_aware_datetime():
    with pytest.raises(CommandError):
        call_command("export_audit", "--since", "last tuesday")


def test_edited_line_in_an_export_is_reported(tmp_path):
    append_events(4)
    lines = export(tmp_path, timezone.now() - timedelta(days=1))
    record = json.loads(lines[2])
    record["actor_name"] = "mallory"
    lines[2] = json.dumps(record)
    code, output = verify_file(tmp_path, lines)
    assert code == 1 and "#3" in output


def test_removed_line_in_an_export_is_reported(tmp_path):
    append_events(4)
    lines = export(tmp_path, timezone.now() - timedelta(days=1))
    del lines[1]
    code, output = verify_file(tmp_path, lines)
    assert code == 1 and "#2 is missing" in output


def test_cut_tail_of_an_export_with_a_checkpoint_is_reported(tmp_path):
    append_events(4)
    audit_checkpoint_create()  # signs event 5
    lines = export(tmp_path, timezone.now() - timedelta(days=1))
    events, checkpoint = lines[:-1], lines[-1]
    code, output = verify_file(tmp_path, events[:3] + [checkpoint])
    assert code == 1 and "#4" in output


def test_export_checkpoint_under_another_key_is_reported(tmp_path):
    append_events(2)
    audit_checkpoint_create()
    lines = export(tmp_path, timezone.now() - timedelta(days=1))
    with override_settings(ELSA_AUDIT_CHECKPOINT_KEY="another-key-of-at-least-thirty-two-chars"):
        code, output = verify_file(tmp_path, lines)
    assert code == 1 and "invalid signature" in output


def test_export_lines_hold_every_hashed_field(tmp_path):
    event = append_events(1)[0]
    record = json.loads(export(tmp_path, timezone.now() - timedelta(days=1))[0])
    assert record["hash"] == event.hash and record["event_id"] == str(event.event_id)
    assert AuditEvent.objects.count() == 1


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
    record = json.loads(lines[1])
    record.update(change)
    lines[1] = json.dumps(record)
    code, output = verify_file(tmp_path, lines)
    assert code == 1 and "#2" in output


def test_export_line_that_is_not_json_is_reported(tmp_path):
    append_events(2)
    lines = export(tmp_path, timezone.now() - timedelta(days=1))
    lines[1] = "{not json"
    assert verify_file(tmp_path, lines)[0] == 1
