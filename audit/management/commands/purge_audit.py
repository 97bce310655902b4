"""manage.py purge_audit --through <event id> --archive <export file>: delete archived events, keep the proof."""

from django.core.management.base import BaseCommand, CommandError

from audit import verification
from audit.actors import Actor
from audit.services import audit_purge
from elsa_site.errors import InvalidInput


class Command(BaseCommand):
    help = (
        "Delete audit events up to a signed checkpoint, once an export (export_audit) holding them verifies; "
        "the chain is then verified from that checkpoint, and an audit.purged event records the purge."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--through", type=int, required=True, help="Last event to delete; a signed checkpoint must name it."
        )
        parser.add_argument("--archive", required=True, help="The export file (export_audit) holding those events.")

    def handle(self, *args, **options):
        through, archive = options["through"], options["archive"]
        if through < 1:
            raise CommandError("--through must be an event id (1 or more).")
        try:
            result = verification.verify_export(archive)
            if not result.is_valid:
                raise CommandError(f"the archive {archive} does not verify: {result.reason}; nothing purged.")
            header, archived_hash = verification.export_event_hash(archive, through)
        except OSError as exc:
            raise CommandError(f"cannot read {archive}: {exc.strerror}") from exc
        if header is None or archived_hash is None:
            raise CommandError(f"the archive {archive} does not hold event #{through}; nothing purged.")
        try:
            deleted = audit_purge(
                through_id=through,
                through_hash=archived_hash,
                archived_from=header["first_id"],
                actor=Actor.system("purge_audit"),
            )
        except InvalidInput as exc:
            raise CommandError(f"{exc.message} Nothing purged.") from exc
        self.stdout.write(f"purged {deleted} audit events through #{through}; the chain is verified from there on")
