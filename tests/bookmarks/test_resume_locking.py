"""How a resume takes its locks: the bookmark first, the instance once and last, and a cancel racing it."""

import json
import threading
import uuid

import pytest
from django.db import connection, connections, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext

from bookmarks.models import Bookmark
from tests.audit_log import chained_events
from tests.bookmarks.factories import suspended, token_for
from tests.conftest import wait_until
from tests.db_sessions import other_session, sessions_blocked_by_me
from tests.workflows.factories import ACTOR
from workflows.models import WorkflowInstance
from workflows.services import workflow_instance_cancel, workflow_instance_resume

pytestmark = pytest.mark.postgres

RESUME = "/elsa/api/bookmarks/resume"


@pytest.fixture
def private_queue(settings):
    """Tasks these committing tests enqueue go to a queue of their own that no worker consumes.

    A session's live worker on the default queue would otherwise run them while the database is
    being flushed after the test.
    """
    from elsa_site.celery import app

    original = app.conf.task_default_queue
    queue = f"{original}-locking-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    app.conf.task_default_queue = queue
    try:
        yield queue
    finally:
        app.conf.task_default_queue = original
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)


def resume(client, token: str):
    body = json.dumps({"input": {"approved": True}})
    return client.post(f"{RESUME}?t={token}", body, content_type="application/json")


def resumed_with_statements(client):
    """A suspended instance resumed through the API: (instance, bookmark, issued token, its statements)."""
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    with CaptureQueriesContext(connection) as queries:
        response = resume(client, issued.token)
    assert response.status_code == 200, response.content
    return instance, bookmark, issued, [query["sql"] for query in queries.captured_queries]


@pytest.mark.django_db(transaction=True)
def test_a_resume_locks_the_instance_once_and_takes_no_savepoint(client, private_queue):
    _instance, bookmark, _issued, statements = resumed_with_statements(client)
    # The token lookup joins the instance but locks only the bookmark (FOR UPDATE OF b).
    instance_locks = [sql for sql in statements if "workflows_workflowinstance" in sql and sql.endswith("FOR UPDATE")]
    assert len(instance_locks) == 1, statements
    assert not [sql for sql in statements if "SAVEPOINT" in sql], statements
    bookmark.refresh_from_db()
    assert bookmark.status == "consumed" and bookmark.resume_count == 1


@pytest.mark.django_db(transaction=True)
def test_engine_resume_of_a_locked_instance_needs_the_callers_transaction(private_queue):
    instance, _bookmark = suspended()
    # Outside any transaction the row lock the caller claims would already be released.
    with pytest.raises(RuntimeError, match="caller's transaction"):
        workflow_instance_resume(instance=instance, activity_id="approve", actor=ACTOR, locked=True)
    assert WorkflowInstance.objects.get(pk=instance.pk).status == "Suspended"


@pytest.mark.django_db(transaction=True)
def test_a_cancel_committed_while_a_resume_waits_for_the_instance_makes_it_404_and_invalidates_the_bookmark(
    private_queue,
):
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    outcome: dict = {}

    def resume_in_another_session():
        try:
            outcome["response"] = resume(Client(), issued.token)
        finally:
            connections.close_all()

    resumer = threading.Thread(target=resume_in_another_session)
    with transaction.atomic():
        # Hold the instance row, as a cancel does, while the resume locks the bookmark, passes every
        # check and then waits for the instance.
        WorkflowInstance.objects.select_for_update().get(pk=instance.pk)
        resumer.start()
        wait_until(lambda: sessions_blocked_by_me() > 0, timeout=30, message="the resume to wait for the instance row")
        # The cancel's invalidation skips the bookmark the waiting resume has locked.
        workflow_instance_cancel(instance=instance, actor=ACTOR)
    resumer.join(timeout=60)

    response = outcome["response"]
    assert response.status_code == 404, response.content
    assert response.json()["error"]["code"] == "bookmark_gone"
    bookmark = Bookmark.objects.get(pk=bookmark.pk)
    assert bookmark.status == "invalidated" and bookmark.resume_count == 0
    assert WorkflowInstance.objects.get(pk=instance.pk).status == "Cancelled"
    events = chained_events()
    attempt = events.filter(event_type="bookmark.resume", resource_id=str(bookmark.pk)).get()
    assert attempt.result == "failure" and attempt.context["reason"] == "instance_cancelled"
    invalidated = events.get(event_type="bookmark.invalidated", resource_id=str(bookmark.pk))
    assert invalidated.context["reason"] == "instance_cancelled"


@pytest.mark.django_db(transaction=True)
def test_a_resume_records_its_event_with_the_burn_and_the_instance_event_with_the_state(client, private_queue):
    instance, bookmark, issued, statements = resumed_with_statements(client)
    audited = [sql for sql in statements if "audit_pendingauditevent" in sql]
    # No audit insert of its own: one rides on the bookmark's burn, one on the instance's state write.
    assert len(audited) == 2, audited
    burn, state = audited
    assert burn.startswith("WITH burn AS (UPDATE") and burn.endswith("FOR UPDATE"), burn
    assert "UPDATE workflows_workflowinstance" in state, state
    resources = [str(bookmark.pk), str(instance.pk)]
    events = chained_events().filter(resource_id__in=resources, action__in=["resume", "resumed"])
    by_type = {event.event_type: event for event in events}
    assert set(by_type) == {"bookmark.resume", "workflow.instance.resumed"}
    resumed = by_type["bookmark.resume"]
    assert resumed.result == "success" and resumed.actor_type == "anonymous"
    assert resumed.context["reason"] == "resumed" and resumed.context["auto_burn"] is True
    assert resumed.context["token_fingerprint"] == issued.record.fingerprint
    assert issued.token not in json.dumps(resumed.context)


@pytest.mark.django_db(transaction=True)
def test_a_resume_whose_event_cannot_be_written_consumes_nothing(private_queue):
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    with other_session() as blocker:
        blocker.execute("LOCK TABLE audit_pendingauditevent IN ACCESS EXCLUSIVE MODE")
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '200ms'")
        try:
            response = resume(Client(raise_request_exception=False), issued.token)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")
        assert response.status_code == 500
    bookmark.refresh_from_db()
    assert bookmark.status == "active" and bookmark.resume_count == 0
    assert WorkflowInstance.objects.get(pk=instance.pk).status == "Suspended"
    # The same link still works once the audit log can be written again.
    assert resume(Client(), issued.token).status_code == 200
