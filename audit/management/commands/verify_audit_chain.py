"""manage.py verify_audit_chain: recompute the whole chain (or an export file) and name the first bad event."""

import sys
import time

from django.core.management.base import BaseCommand, CommandError

from audit import verification


class Command(BaseCommand):
    help = "Verify the audit hash chain; exit 0 with a summary when intact, 1 naming the first bad event."

    def add_arguments(self, parser):
        parser.add_argument("--file", help="Verify a JSON Lines export (from export_audit) instead of the database.")
        parser.add_argument(
            "--jobs",
            type=int,
            default=None,
            help="Processes verifying segments of the chain at once (PostgreSQL, chains of "
            f"{verification.PARALLEL_MIN_EVENTS} events or more); default: the CPUs available, at most 4.",
        )

    def handle(self, *args, **options):
        started = time.monotonic()
        if options["file"]:
            source = options["file"]
            try:
                result = verification.verify_export(source)
            except OSError as exc:
                raise CommandError(f"cannot read {source}: {exc.strerror}") from exc
        else:
            source = "database"
            jobs = options["jobs"] if options["jobs"] is not None else verification.default_jobs()
            if jobs < 1:
                raise CommandError("--jobs must be at least 1.")
            result = verification.verify_chain(jobs=jobs)
        elapsed = time.monotonic() - started
        if not result.is_valid:
            where = f"first bad event #{result.first_invalid_id}: " if result.first_invalid_id else ""
            self.stderr.write(
                f"audit chain INVALID ({source}): {where}{result.reason} ({result.total_checked} events checked)"
            )
            sys.exit(1)
        head = f", head #{result.head_id}" if result.head_id else ""
        self.stdout.write(f"audit chain OK ({source}): {result.total_checked} events verified{head} in {elapsed:.3f}s")
        if not options["file"]:
            self._report_pending()

    def _report_pending(self) -> None:
        # Recorded but not chained yet: normal for a moment after a commit; a backlog that stays
        # means chaining fails (see the error log) and the audit.seal sweep is not running.
        from django.utils import timezone

        from audit.models import PendingAuditEvent

        oldest = PendingAuditEvent.objects.order_by("id").values_list("timestamp", flat=True).first()
        if oldest is not None:
            count = PendingAuditEvent.objects.count()
            age = (timezone.now() - oldest).total_seconds()
            self.stdout.write(f"{count} recorded events not chained yet (oldest recorded {age:.0f}s ago)")
