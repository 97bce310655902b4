"""Freshness: the beat signs the head at least once per interval, and verification fails when the newest
signed checkpoint is too old (a tail cut back to an old checkpoint, the checkpoints after it deleted)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditCheckpoint, AuditEvent
from audit.services import audit_checkpoint_create
from audit.verification import verify_chain
from tests.audit.helpers import append_events, sign_checkpoint

pytestmark = pytest.mark.django_db

UNSIGNED_WARNING = "audit chain unsigned for longer than ELSA_AUDIT_CHECKPOINT_MAX_AGE_SECONDS"


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
    recent = sign_checkpoint(head, timezone.now() - timedelta(seconds=20))
    assert audit_checkpoint_create().pk == recent.pk
    settings.ELSA_AUDIT_CHECKPOINT_INTERVAL_SECONDS = 30.0  # now 20 s is more than half of it
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
