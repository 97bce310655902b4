"""The engine's finish, fault and cancel hooks invalidate active bookmarks only, one audit event each."""

import pytest

from bookmarks.models import Bookmark
from bookmarks.services import bookmarks_invalidate
from tests.audit_log import chained_events
from tests.bookmarks.factories import linear, run_in_process, start_instance, suspended
from tests.workflows.factories import ACTOR
from workflows.services import workflow_instance_cancel

pytestmark = pytest.mark.django_db


def two_waits() -> dict:
    return linear(
        {"id": "fork", "type": "Fork"},
        {"id": "first", "type": "WaitForResume"},
        {"id": "second", "type": "WaitForResume"},
        name="two-waits",
        connections=[{"source": "fork", "target": "first"}, {"source": "fork", "target": "second"}],
    )


def test_cancel_invalidates_every_active_bookmark_with_one_audit_event_each():
    instance = run_in_process(start_instance(two_waits()))
    workflow_instance_cancel(instance=instance, actor=ACTOR)
    bookmarks = list(Bookmark.objects.filter(instance=instance))
    assert len(bookmarks) == 2
    assert {b.status for b in bookmarks} == {"invalidated"}
    assert all(b.invalidated_at is not None for b in bookmarks)
    events = chained_events().filter(event_type="bookmark.invalidated", context__instance_id=str(instance.pk))
    assert sorted(e.resource_id for e in events) == sorted(str(b.pk) for b in bookmarks)
    assert {e.context["reason"] for e in events} == {"instance_cancelled"}


def test_an_instance_without_active_bookmarks_invalidates_nothing():
    instance, bookmark = suspended()
    Bookmark.objects.filter(pk=bookmark.pk).update(status="consumed")
    assert bookmarks_invalidate(instance=instance, reason="instance_finished", actor=ACTOR) == 0
    bookmark.refresh_from_db()
    assert bookmark.status == "consumed"
    assert bookmark.invalidated_at is None
    assert not chained_events().filter(event_type="bookmark.invalidated", resource_id=str(bookmark.pk)).exists()


def test_finishing_a_workflow_that_never_waits_touches_no_bookmark():
    # No activity of the version creates bookmarks, so the finish hook skips the invalidation.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.workflows.factories import five_step_document

    instance = start_instance(five_step_document(), input={"amount": 5})
    with CaptureQueriesContext(connection) as queries:
        instance = run_in_process(instance)
    assert instance.status == "Finished"
    assert not [q for q in queries.captured_queries if Bookmark._meta.db_table in q["sql"]]


def test_finishing_a_workflow_that_can_wait_still_invalidates():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    instance, _ = suspended()
    with CaptureQueriesContext(connection) as queries:
        workflow_instance_cancel(instance=instance, actor=ACTOR)
    assert [q for q in queries.captured_queries if Bookmark._meta.db_table in q["sql"]]


@pytest.mark.django_db(transaction=True)
def test_a_fault_invalidates_a_live_bookmark_in_the_transaction_of_the_fault():
    # One branch waits (its bookmark is created), the other faults the instance: the version has a
    # bookmarking activity, so the fault is saved in a transaction with the invalidation.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    document = linear(
        {"id": "fork", "type": "Fork"},
        {"id": "wait", "type": "WaitForResume"},
        {"id": "fail", "type": "Fault", "message": "'stop'"},
        name="wait-or-fail",
        connections=[{"source": "fork", "target": "wait"}, {"source": "fork", "target": "fail"}],
    )
    with CaptureQueriesContext(connection) as queries:
        instance = run_in_process(start_instance(document))
    assert instance.status == "Faulted"
    [bookmark] = Bookmark.objects.filter(instance=instance)
    assert bookmark.status == "invalidated"
    [event] = chained_events().filter(event_type="bookmark.invalidated", resource_id=str(bookmark.pk))
    assert event.context["reason"] == "instance_faulted"
    statements = [q["sql"] for q in queries.captured_queries]
    invalidation = next(i for i, sql in enumerate(statements) if "UPDATE bookmarks_bookmark SET status" in sql)
    begin = max(i for i, sql in enumerate(statements[:invalidation]) if sql == "BEGIN")
    commit = invalidation + statements[invalidation:].index("COMMIT")
    # The fault's own statement (status, record, audit event) is in that transaction too.
    assert any("UPDATE workflows_workflowinstance SET status = " in sql for sql in statements[begin:commit])
