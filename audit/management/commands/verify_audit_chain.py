"""manage.py verify_audit_chain: verify the chain (or an export), naming the first bad event; check freshness."""

import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from audit import verification

# At most this many earlier unsigned periods are printed, the latest ones; the rest are counted.
SHOWN_PERIODS = 20


class Command(BaseCommand):
    help = (
        "Verify the audit hash chain; exit 0 with a summary when intact and freshly signed, 1 naming the first "
        "bad event, or the newest signed checkpoint when it is too old."
    )

    def add_arguments(self, parser):
        parser.add_argument("--file", help="Verify a JSON Lines export (from export_audit) instead of the database.")
        parser.add_argument(
            "--max-checkpoint-age",
            type=float,
            default=None,
            metavar="SECONDS",
            help="How old the newest signed checkpoint may be (default: ELSA_AUDIT_CHECKPOINT_MAX_AGE_SECONDS); "
            "raise it to verify a restored backup, or a server whose beat was stopped on purpose.",
        )
        parser.add_argument(
            "--jobs",
            type=int,
            default=None,
            help="Processes verifying segments of the chain at once (PostgreSQL, chains of "
            f"{verification.PARALLEL_MIN_EVENTS} events or more); default: the CPUs available, at most 4.",
        )

    def handle(self, *args, **options):
        started = time.monotonic()
        max_age = options["max_checkpoint_age"]
        if max_age is not None and not max_age > 0:
            raise CommandError("--max-checkpoint-age must be a positive number of seconds.")
        if max_age is not None and options["file"]:
            # An export is old by design; its signed header already proves where it ends.
            raise CommandError("--max-checkpoint-age applies to the database, not to --file.")
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
        summary = f"{result.total_checked} events verified{head} in {elapsed:.3f}s"
        if options["file"]:
            self.stdout.write(f"audit chain OK ({source}): {summary}")
            return
        # The chain verifies up to its head; whether that head is where the chain really ends, only a
        # recent signature can tell (a tail cut back to an old checkpoint verifies as a shorter chain).
        freshness = verification.chain_freshness(max_age=max_age, history=True)
        if not freshness.is_fresh:
            self.stderr.write(f"audit chain STALE ({source}): {summary}, but {freshness.reason}")
            self._report_unsigned_periods(freshness, max_age)
            sys.exit(1)
        self.stdout.write(f"audit chain OK ({source}): {summary}")
        self._report_unsigned_periods(freshness, max_age)
        self._report_pending()

    def _report_unsigned_periods(self, freshness: verification.Freshness, max_age: float | None) -> None:
        # Warnings, not failures: each ended with a signature, so the chain is fresh, and a beat stopped
        # for maintenance or an outage leaves the same trace as a cut; events chained in them could
        # have been cut unseen, and only the operator can tell which it was.
        periods = freshness.unsigned_periods
        if not periods:
            return
        allowed = settings.ELSA_AUDIT_CHECKPOINT_MAX_AGE_SECONDS if max_age is None else max_age
        self.stderr.write(
            f"warning: {len(periods)} earlier period(s) longer than {allowed:g}s without a signed checkpoint: events "
            "chained in them could have been cut unseen (or the audit.checkpoint beat was stopped)"
        )
        if len(periods) > SHOWN_PERIODS:
            self.stderr.write(f"warning: ... {len(periods) - SHOWN_PERIODS} earlier one(s), then:")
        for period in periods[-SHOWN_PERIODS:]:
            self.stderr.write(f"warning: {period}")

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
