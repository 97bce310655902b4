"""The beat task that signs the chain head, run by a real Celery worker."""

import os
import signal
import subprocess
import sys

import pytest
from django.conf import settings

from audit.models import AuditCheckpoint, AuditEvent
from audit.tasks import audit_checkpoint
from audit.verification import verify_chain
from tests.audit.helpers import append_events
from tests.conftest import ROOT, wait_until, worker_environment


def test_checkpoint_task_is_scheduled_by_beat():
    schedules = [entry for entry in settings.CELERY_BEAT_SCHEDULE.values() if entry["task"] == "audit.checkpoint"]
    assert len(schedules) == 1 and schedules[0]["schedule"] <= 300


@pytest.mark.live_worker
@pytest.mark.redis
@pytest.mark.postgres
def test_worker_signs_the_head_once_while_it_does_not_move(live_worker):
    append_events(3)
    head_id = audit_checkpoint.delay().get(timeout=30)
    assert head_id == 4  # the checkpoint's own audit.checkpoint event
    assert audit_checkpoint.delay().get(timeout=30) == 4
    assert AuditCheckpoint.objects.count() == 1
    assert AuditEvent.objects.get(id=4).event_type == "audit.checkpoint"
    assert verify_chain().is_valid


@pytest.mark.live_worker
@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
def test_beat_schedules_checkpoints_that_the_worker_signs(live_worker, tmp_path):
    append_events(2)
    env = worker_environment(ELSA_AUDIT_CHECKPOINT_INTERVAL_SECONDS="1")
    beat = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "elsa_site",
            "beat",
            "--schedule",
            str(tmp_path / "beat-schedule"),
            "--loglevel",
            "INFO",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: AuditCheckpoint.objects.exists(), timeout=60, message="a checkpoint signed via beat")
    finally:
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(timeout=20)
    checkpoint = AuditCheckpoint.objects.order_by("id").first()
    assert AuditEvent.objects.get(id=checkpoint.event_id).event_type == "audit.checkpoint"
    assert verify_chain().is_valid
