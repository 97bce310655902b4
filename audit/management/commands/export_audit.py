"""manage.py export_audit --since <datetime>: write events (and checkpoints) as verifiable JSON Lines."""

import json
import sys

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from audit.chain import EVENT_COLUMNS, canonical_timestamp
from audit.models import AuditCheckpoint, AuditEvent
from audit.verification import CHUNK_SIZE


class Command(BaseCommand):
    help = "Export audit events from a point in time as JSON Lines that verify_audit_chain --file verifies."

    def add_arguments(self, parser):
        parser.add_argument(
            "--since", required=True, help="ISO-8601 date and time (with time zone), e.g. 2026-01-01T00:00:00Z"
        )
        parser.add_argument("--output", help="File to write (default: standard output).")

    def handle(self, *args, **options):
        since = parse_datetime(options["since"]) if options["since"] else None
        if since is None or since.tzinfo is None:
            raise CommandError("--since must be an ISO-8601 date and time with a time zone, e.g. 2026-01-01T00:00:00Z")
        # The export is a contiguous run of ids from the first event at or after `since`, so it
        # verifies on its own, anchored on that first event's link.
        first_id = AuditEvent.objects.filter(timestamp__gte=since).order_by("id").values_list("id", flat=True).first()
        out = open(options["output"], "w", encoding="utf-8") if options["output"] else sys.stdout  # noqa: SIM115
        count = 0
        try:
            if first_id is not None:
                rows = (
                    AuditEvent.objects.filter(id__gte=first_id)
                    .order_by("id")
                    .values_list(*EVENT_COLUMNS)
                    .iterator(chunk_size=CHUNK_SIZE)
                )
                for row in rows:
                    record = dict(zip(EVENT_COLUMNS, row, strict=True))
                    record["event_id"] = str(record["event_id"])
                    record["timestamp"] = canonical_timestamp(record["timestamp"])
                    out.write(json.dumps(record, sort_keys=True, ensure_ascii=True) + "\n")
                    count += 1
                checkpoints = AuditCheckpoint.objects.filter(event_id__gte=first_id).order_by("id")
                for checkpoint in checkpoints.values_list("event_id", "event_hash", "created", "signature"):
                    event_id, event_hash, created, signature = checkpoint
                    line = {
                        "record": "checkpoint",
                        "event_id": event_id,
                        "event_hash": event_hash,
                        "created": canonical_timestamp(created),
                        "signature": signature,
                    }
                    out.write(json.dumps(line, sort_keys=True) + "\n")
        finally:
            if out is not sys.stdout:
                out.close()
        self.stderr.write(f"exported {count} audit events")
