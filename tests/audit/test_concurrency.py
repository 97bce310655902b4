"""Several OS processes append at once against PostgreSQL; the chain never forks and verifies.

Each process records its events and chains them right after each commit, as every process of
the server does; nothing else chains here, so an event a process failed to hand over to the
chain would stay pending and fail the test.
"""

import subprocess
import sys

import pytest
from django.conf import settings

from audit.models import AuditEvent, PendingAuditEvent
from audit.services import CHAIN_LOCK_KEY
from audit.verification import verify_chain
from tests.conftest import ROOT, wait_until, worker_environment
from tests.db_sessions import other_session

WRITERS = 4
EVENTS_PER_WRITER = 150


@pytest.mark.postgres
@pytest.mark.slow
def test_concurrent_writer_processes_never_fork_the_chain(transactional_db):
    # The writers wait on the chain lock while the others start: on a loaded machine that can take
    # longer than the default lock timeout, after which a writer leaves its events to the sweep.
    env = worker_environment(DJANGO_SETTINGS_MODULE=settings.SETTINGS_MODULE, ELSA_AUDIT_SEAL_LOCK_TIMEOUT_MS="120000")
    with other_session(autocommit=True) as gate:
        # Hold the chain lock so every writer queues on it (each one's first event is recorded and
        # committed, and its chaining waits), then release them all at once.
        gate.execute("SELECT pg_advisory_lock(%s)", [CHAIN_LOCK_KEY])
        writers = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.audit.append_worker", str(EVENTS_PER_WRITER), f"writer-{n}"],
                cwd=ROOT,
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in range(WRITERS)
        ]
        try:

            def all_waiting():
                row = gate.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = %s",
                    [CHAIN_LOCK_KEY & 0xFFFFFFFF],
                ).fetchone()
                return row[0] >= WRITERS  # this process's own chainer may be queued too

            wait_until(all_waiting, timeout=60, message="every writer process blocked on the chain lock")
            gate.execute("SELECT pg_advisory_unlock(%s)", [CHAIN_LOCK_KEY])
            for writer in writers:
                _, stderr = writer.communicate(timeout=120)
                assert writer.returncode == 0, stderr
        finally:
            for writer in writers:
                if writer.poll() is None:
                    writer.kill()
                    writer.wait()

    total = WRITERS * EVENTS_PER_WRITER
    assert PendingAuditEvent.objects.count() == 0
    assert AuditEvent.objects.count() == total
    assert list(AuditEvent.objects.values_list("id", flat=True)) == list(range(1, total + 1))
    # Every writer's events interleave with the others' (they really ran at once).
    tags = list(AuditEvent.objects.order_by("id").values_list("resource_id", flat=True))
    assert sum(1 for a, b in zip(tags, tags[1:], strict=False) if a != b) > WRITERS
    result = verify_chain()
    assert (result.is_valid, result.total_checked) == (True, total)
