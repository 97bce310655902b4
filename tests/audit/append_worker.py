"""A separate OS process appending audit events: `python -m tests.audit.append_worker COUNT TAG`."""

import sys

import django


def main() -> None:
    django.setup()
    from django.db import transaction

    from audit.actors import Actor
    from audit.services import audit_record

    count, tag = int(sys.argv[1]), sys.argv[2]
    for number in range(count):
        with transaction.atomic():
            audit_record(
                event_type="test.concurrent",
                action="appended",
                resource=("writer", tag),
                actor=Actor.system(tag),
                context={"n": number},
            )


if __name__ == "__main__":
    main()
