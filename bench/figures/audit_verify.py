"""Figure audit_verify: events per second verified by `manage.py verify_audit_chain` on PostgreSQL."""

import json
import re
import subprocess
import sys
import uuid
from datetime import timedelta

from bench.harness import ROOT, figure

EVENTS = 300_000
TARGET = 100_000.0  # events/s: the target, printed beside the measured ratio

_COLUMNS = (
    "id, event_id, timestamp, event_type, action, result, resource_type, resource_id, "
    "actor_type, actor_id, actor_name, actor_ip, context, metadata, previous_hash, hash"
)


def seed_chain(count: int) -> int:
    """Append `count` valid events after the current head with COPY (hashes computed as the service does)."""
    from django.db import connection, transaction
    from django.utils import timezone

    from audit.chain import GENESIS_HASH, compute_hash
    from audit.models import AuditEvent

    head = AuditEvent.objects.order_by("-id").values_list("id", "hash").first() or (0, GENESIS_HASH)
    next_id, previous = head[0] + 1, head[1]
    started = timezone.now()
    kinds = [
        ("workflow.instance.started", "started", "workflow-instance", {}),
        ("bookmark.resume", "resumed", "bookmark", {"activity_id": "approve", "outcome": "Done"}),
        ("executor.call", "called", "executor", {"endpoint": "analyze", "status": 200, "attempt": 1}),
        ("identity.login", "login", "user", {}),
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY audit_auditevent ({_COLUMNS}) FROM STDIN") as copy:
            for offset in range(count):
                event_type, action, resource_type, context = kinds[offset % len(kinds)]
                fields = {
                    "id": next_id + offset,
                    "event_id": uuid.uuid4(),
                    "timestamp": started + timedelta(microseconds=offset),
                    "event_type": event_type,
                    "action": action,
                    "result": "success",
                    "resource_type": resource_type,
                    "resource_id": f"{resource_type}-{offset}",
                    "actor_type": "user",
                    "actor_id": str(offset % 50),
                    "actor_name": f"user-{offset % 50}",
                    "actor_ip": "10.0.0.7",
                    "context": context,
                    "metadata": {},
                    "previous_hash": previous,
                }
                digest = compute_hash(**fields)
                copy.write_row(
                    (
                        fields["id"],
                        str(fields["event_id"]),
                        fields["timestamp"],
                        event_type,
                        action,
                        "success",
                        resource_type,
                        fields["resource_id"],
                        "user",
                        fields["actor_id"],
                        fields["actor_name"],
                        "10.0.0.7",
                        json.dumps(context),
                        "{}",
                        previous,
                        digest,
                    )
                )
                previous = digest
    return next_id + count - 1


def scan_rate() -> float:
    """The baseline: rows per second read by a bare server-side cursor over the same table, no hashing."""
    import time

    from django.db import connection, transaction

    started = time.perf_counter()
    count = 0
    with transaction.atomic(), connection.chunked_cursor() as cursor:
        cursor.execute("SELECT * FROM audit_auditevent ORDER BY id")
        while rows := cursor.fetchmany(5000):
            count += len(rows)
    return count / (time.perf_counter() - started)


def _settle() -> None:
    """VACUUM ANALYZE the chain after the bulk load, as an archived chain would be: both scans then
    read settled pages instead of the first one paying to set every row's hint bits, and
    autovacuum does not start on the fresh rows in the middle of the measurement."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE audit_auditevent")


def measure(h) -> dict:
    from audit.services import audit_checkpoint_create

    seed_chain(EVENTS)
    # Signed, as the beat keeps a production chain: the command fails a chain whose newest signed
    # checkpoint (or, with none, whose oldest event: the earlier figures' run minutes before) is too old.
    audit_checkpoint_create()
    _settle()
    baseline = scan_rate()
    # The command itself, in its own process; it reports the time spent verifying (not Django start-up).
    out = subprocess.run(
        [sys.executable, "manage.py", "verify_audit_chain"],
        cwd=ROOT,
        env=h.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"(\d+) events verified.* in ([\d.]+)s", out)
    if not match:
        raise RuntimeError(f"unexpected verify_audit_chain output: {out!r}")
    verified, seconds = int(match.group(1)), float(match.group(2))
    rate = verified / seconds
    from audit.verification import default_jobs

    return figure(
        "audit_verify",
        rate,
        baseline,
        "events/s",
        f"{verified} events, every hash recomputed, {default_jobs()} segments at once (the command's default "
        "--jobs); baseline = bare server-side cursor scan of the same rows in one process; "
        f"target {TARGET:.0f}/s",
    )
