"""Figure audit_append: audit events appended per second by 4 concurrent writer processes on PostgreSQL."""

import subprocess
import sys
import time

from bench.harness import ROOT, figure

WRITERS = 4
EVENTS_PER_WRITER = 1500
TARGET = 2000.0  # events/s: the target, printed beside the measured ratio

# Each writer is a separate OS process: one transaction per event, as a service records it, and
# the event chained right after each commit by the writer itself (audit_record's after-commit
# hook). Each writer says "done" after its last commit; the clock stops when every writer is done
# and no event is left pending (every event is in the chain), not when the processes have exited:
# tearing down an interpreter is not appending.
_WRITER = """
import sys
import django
django.setup()
from django.db import connection, transaction
from audit.actors import Actor
from audit.services import audit_record
count, tag = int(sys.argv[1]), sys.argv[2]
connection.ensure_connection()
print("ready", flush=True)
sys.stdin.readline()
for number in range(count):
    with transaction.atomic():
        audit_record(
            event_type="bench.append",
            action="appended",
            resource=("writer", tag),
            actor=Actor.system(tag),
            context={"n": number},
        )
print("done", flush=True)
"""


# The baseline: the same 4 processes, each transaction inserting one trivial row and committing,
# with bare psycopg: what this machine's PostgreSQL commits per second for 4 clients. The ratio
# shows what the audit service (Django, canonical JSON, SHA-256, chaining, indexes) costs on top.
_BASELINE_WRITER = """
import os, sys
import psycopg
count = int(sys.argv[1])
conn = psycopg.connect(os.environ["ELSA_BENCH_DSN"])
print("ready", flush=True)
sys.stdin.readline()
for number in range(count):
    conn.execute("INSERT INTO bench_audit_baseline (n) VALUES (%s)", [number])
    conn.commit()
print("done", flush=True)
"""


def _nothing_pending() -> None:
    """Wait until no recorded event is left unchained (the writers' chainers chain the last ones)."""
    from audit.models import PendingAuditEvent

    # ORDER BY id LIMIT 1 reads the primary key index; the table's heap is mostly dead rows.
    while PendingAuditEvent.objects.order_by("id").values_list("id", flat=True).first() is not None:
        time.sleep(0.002)


def _run_writers(h, code: str, args: list[str], env: dict | None = None, until=None) -> float:
    """Start WRITERS processes, release them together, return the seconds until every one is done
    (and `until()` has returned)."""
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", code, *args, f"writer-{n}"],
            cwd=ROOT,
            env=env or h.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(WRITERS)
    ]
    try:
        # Start the clock only when every process is loaded and connected.
        for writer in writers:
            assert writer.stdout is not None and writer.stdin is not None  # both are pipes
            if writer.stdout.readline().strip() != "ready":
                raise RuntimeError("a writer failed to start")
        started = time.perf_counter()
        for writer in writers:
            writer.stdin.write("go\n")  # type: ignore[union-attr]  # a pipe, checked above
            writer.stdin.flush()  # type: ignore[union-attr]
        for writer in writers:
            if writer.stdout.readline().strip() != "done":  # type: ignore[union-attr]  # a pipe
                raise RuntimeError("a writer failed")
        if until is not None:
            until()
        elapsed = time.perf_counter() - started
        for writer in writers:
            if writer.wait(timeout=600) != 0:
                raise RuntimeError("a writer failed")
        return elapsed
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait()


def _baseline_rate(h) -> float:
    from django.db import connection

    settings_dict = connection.settings_dict
    dsn = f"host={settings_dict['HOST'] or '127.0.0.1'} port={settings_dict['PORT'] or 5432} "
    dsn += f"user={settings_dict['USER']} dbname={settings_dict['NAME']}"
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_audit_baseline (id bigserial PRIMARY KEY, n int)")
    try:
        seconds = _run_writers(h, _BASELINE_WRITER, [str(EVENTS_PER_WRITER)], env={**h.env, "ELSA_BENCH_DSN": dsn})
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS bench_audit_baseline")
    return WRITERS * EVENTS_PER_WRITER / seconds


def measure(h) -> dict:
    from audit.models import AuditEvent, PendingAuditEvent
    from audit.verification import verify_chain

    baseline = _baseline_rate(h)
    before = AuditEvent.objects.count()
    elapsed = _run_writers(h, _WRITER, [str(EVENTS_PER_WRITER)], until=_nothing_pending)
    appended = AuditEvent.objects.count() - before
    if PendingAuditEvent.objects.exists():
        raise RuntimeError("events were left recorded but not chained")
    if appended != WRITERS * EVENTS_PER_WRITER:
        raise RuntimeError(f"expected {WRITERS * EVENTS_PER_WRITER} new events, found {appended}")
    result = verify_chain()
    if not result.is_valid:
        raise RuntimeError(f"audit chain broken after concurrent appends: {result.reason}")
    rate = appended / elapsed
    return figure(
        "audit_append",
        rate,
        baseline,
        "events/s",
        f"{WRITERS} writer processes, 1 event per transaction, each chained after its commit; chain of "
        f"{result.total_checked} verified; baseline = bare psycopg insert+commit, same {WRITERS} processes; "
        f"target {TARGET:.0f}/s",
    )
