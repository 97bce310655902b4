"""Chaining after commit: the process's chainer thread chains events once their transaction commits."""

import logging

import pytest
from django.conf import settings
from django.db import transaction

from audit.actors import Actor
from audit.models import AuditEvent, PendingAuditEvent
from audit.services import CHAIN_LOCK_KEY, audit_record
from audit.tasks import audit_seal_pending
from audit.verification import verify_chain
from identity.models import User
from tests.conftest import wait_until
from tests.db_sessions import other_session

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _record(number: int) -> None:
    audit_record(event_type="test.sealed", action="recorded", actor=Actor.system(), context={"n": number})


def _chained(count: int) -> None:
    # Nothing in these tests chains but the chainer thread (no audit_seal() call before this).
    wait_until(lambda: AuditEvent.objects.count() == count, timeout=10, message=f"{count} events chained")
    assert PendingAuditEvent.objects.count() == 0


def test_events_are_chained_when_their_transaction_commits():
    with transaction.atomic():
        _record(1)
        _record(2)
        assert AuditEvent.objects.count() == 0  # not before the commit
    _chained(2)
    assert [e.context["n"] for e in AuditEvent.objects.order_by("id")] == [1, 2]
    assert verify_chain().is_valid


def test_outside_a_transaction_the_event_is_chained_after_its_own_commit():
    _record(1)
    _chained(1)
    assert AuditEvent.objects.get().context == {"n": 1}


def test_a_rolled_back_savepoint_does_not_cancel_chaining_of_later_events():
    with transaction.atomic():
        with pytest.raises(RuntimeError), transaction.atomic():
            _record(1)
            raise RuntimeError("the inner step fails")
        _record(2)
    _chained(1)
    assert [e.context["n"] for e in AuditEvent.objects.all()] == [2]


def test_events_committed_while_the_chainer_works_are_chained_too():
    # Many small transactions in a row: each commit wakes the chainer, most while it is busy.
    for number in range(50):
        _record(number)
    _chained(50)
    assert [e.context["n"] for e in AuditEvent.objects.order_by("id")] == list(range(50))
    assert verify_chain().is_valid


def test_events_a_failed_chaining_left_pending_are_chained_by_the_sweep(settings, caplog):
    settings.ELSA_AUDIT_SEAL_LOCK_TIMEOUT_MS = 200
    with other_session(autocommit=True) as blocker:
        # A stuck sealer holds the chain lock: the action still commits, its event stays pending.
        blocker.execute("SELECT pg_advisory_lock(%s)", [CHAIN_LOCK_KEY])
        with caplog.at_level(logging.ERROR, logger="elsa.audit"):
            with transaction.atomic():
                User.objects.create(username="committed")
                _record(1)
            wait_until(lambda: "periodic sweep will retry" in caplog.text, timeout=10, message="chaining failed")
        assert User.objects.filter(username="committed").exists()
        assert PendingAuditEvent.objects.count() == 1
        assert AuditEvent.objects.count() == 0
        blocker.execute("SELECT pg_advisory_unlock(%s)", [CHAIN_LOCK_KEY])
    assert audit_seal_pending() == 1
    assert AuditEvent.objects.get().context == {"n": 1}
    assert verify_chain().is_valid


def test_the_sweep_is_scheduled():
    schedule = settings.CELERY_BEAT_SCHEDULE["audit-seal"]
    assert schedule["task"] == "audit.seal"
    assert schedule["schedule"] <= 60


def test_a_process_that_exits_chains_what_it_recorded():
    # The chainer thread would wait a minute before its pass: only the exit hook can chain the event.
    import subprocess
    import sys

    from tests.conftest import ROOT, worker_environment

    code = (
        "import django; django.setup()\n"
        "import audit.chainer; audit.chainer.GATHER_SECONDS = 60\n"
        "from audit.actors import Actor\n"
        "from audit.services import audit_record\n"
        "audit_record(event_type='test.exit', action='recorded', actor=Actor.system('exiting'))\n"
    )
    env = worker_environment(DJANGO_SETTINGS_MODULE=settings.SETTINGS_MODULE)
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=60)
    assert PendingAuditEvent.objects.count() == 0
    assert AuditEvent.objects.get().event_type == "test.exit"
    assert verify_chain().is_valid


def test_a_forked_child_starts_its_own_chainer():
    # A prefork worker child inherits the parent's chainer object but not its thread; the child's
    # event is chained by a thread of its own (both leave with os._exit, skipping the exit hook).
    import subprocess
    import sys

    from tests.conftest import ROOT, worker_environment

    code = (
        "import os, time, django; django.setup()\n"
        "from audit.actors import Actor\n"
        "from audit.services import audit_record\n"
        "from audit.models import AuditEvent\n"
        "audit_record(event_type='test.parent', action='recorded', actor=Actor.system('parent'))\n"
        "while not AuditEvent.objects.filter(event_type='test.parent').exists():\n"
        "    time.sleep(0.05)\n"
        "from django.db import connection; connection.close()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    audit_record(event_type='test.child', action='recorded', actor=Actor.system('child'))\n"
        "    deadline = time.monotonic() + 10\n"
        "    while not AuditEvent.objects.filter(event_type='test.child').exists() and time.monotonic() < deadline:\n"
        "        time.sleep(0.05)\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "os._exit(0)\n"  # no exit hook here either: only the child's own thread can chain its event
    )
    env = worker_environment(DJANGO_SETTINGS_MODULE=settings.SETTINGS_MODULE)
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=60)
    assert PendingAuditEvent.objects.count() == 0
    assert set(AuditEvent.objects.values_list("event_type", flat=True)) == {"test.parent", "test.child"}
    assert verify_chain().is_valid
