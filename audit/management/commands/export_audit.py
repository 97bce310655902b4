"""manage.py export_audit --since <datetime>: write events (and checkpoints) as verifiable JSON Lines."""

import json
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from audit.actors import Actor
from audit.chain import EVENT_COLUMNS, canonical_timestamp, export_header_signature
from audit.models import AuditCheckpoint, AuditEvent
from audit.services import audit_checkpoint_create
from audit.verification import CHUNK_SIZE, EXPORT_FORMAT


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
        # The export ends at a signed point: a checkpoint of the current head (chained and signed
        # under the chain lock; the head's own if it is already signed), and exactly through it.
        checkpoint = audit_checkpoint_create(actor=Actor.system("export_audit"))
        first = None
        if checkpoint is not None:
            # A contiguous run of ids from the first event at or after `since`, so it verifies on
            # its own, anchored on the signed header's first id and previous hash.
            first = (
                AuditEvent.objects.filter(timestamp__gte=since, id__lte=checkpoint.event_id)
                .order_by("id")
                .values_list("id", "previous_hash")
                .first()
            )
        header = {
            "record": "header",
            "format": EXPORT_FORMAT,
            "since": canonical_timestamp(since),
            "created": canonical_timestamp(timezone.now()),
            "first_id": first[0] if first else None,
            "first_previous_hash": first[1] if first else None,
            "last_id": checkpoint.event_id if first else None,
            "last_hash": checkpoint.event_hash if first else None,
        }
        header["signature"] = export_header_signature(key=settings.ELSA_AUDIT_CHECKPOINT_KEY, header=header)
        out = open(options["output"], "w", encoding="utf-8") if options["output"] else sys.stdout  # noqa: SIM115
        count = 0
        try:
            out.write(json.dumps(header, sort_keys=True) + "\n")
            if first is not None:
                count = self._write_run(out, first[0], checkpoint.event_id)
        finally:
            if out is not sys.stdout:
                out.close()
        self.stderr.write(f"exported {count} audit events")

    def _write_run(self, out, first_id: int, last_id: int) -> int:
        """Events first_id..last_id, then the checkpoints naming them; returns the number of events.

        Rows up to last_id were committed before the export's checkpoint and never change, and a
        checkpoint committed while this runs names a later event: bounded by last_id, the two
        queries agree without sharing a snapshot.
        """
        count = 0
        rows = (
            AuditEvent.objects.filter(id__gte=first_id, id__lte=last_id)
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
        checkpoints = AuditCheckpoint.objects.filter(event_id__gte=first_id, event_id__lte=last_id).order_by("id")
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
        return count
