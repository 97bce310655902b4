"""How a resume takes its locks: one fenced statement, changes racing it, and the locked path."""

import json
import threading
import uuid

import pytest
from django.db import connection, connections, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from bookmarks.models import Bookmark
from bookmarks.services import bookmark_revoke
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
def test_a_resume_is_a_lookup_and_one_fenced_statement_without_a_transaction(client, private_queue):
    _instance, bookmark, _issued, statements = resumed_with_statements(client)
    assert len(statements) == 2, statements
    lookup, write = statements
    # The token lookup joins the instance and locks nothing: the write is fenced instead.
    assert lookup.startswith("SELECT") and "FOR UPDATE" not in lookup, lookup
    # The write locks the bookmark if it is still live, then changes the instance if its revision
    # is still the one read, burns the bookmark and records the events: all of it or none.
    assert write.startswith('WITH live AS (SELECT b."id" FROM "bookmarks_bookmark" b'), write
    assert "FOR UPDATE), upd AS (UPDATE workflows_workflowinstance" in write, write
    assert 'burn AS (UPDATE "bookmarks_bookmark"' in write and "INSERT INTO audit_pendingauditevent" in write
    assert not [sql for sql in statements if "SAVEPOINT" in sql or sql == "BEGIN"], statements
    bookmark.refresh_from_db()
    assert bookmark.status == "consumed" and bookmark.resume_count == 1


def _between_lookup_and_write(monkeypatch, sql: str, params: list):
    """Commit `sql` in another session after the resume's lookup, before its write."""
    import bookmarks.services

    validate = bookmarks.services.input_validate
    calls = []

    def validate_then_change(schema, data):
        validate(schema, data)
        if not calls:  # only on the first (fenced) pass, not again on the fallback's
            calls.append(schema)
            with other_session(autocommit=True) as other:
                other.execute(sql, params)

    monkeypatch.setattr(bookmarks.services, "input_validate", validate_then_change)
    return calls


@pytest.mark.django_db(transaction=True)
def test_a_token_revoked_between_the_lookup_and_the_write_resumes_nothing(monkeypatch, private_queue):
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    revoke = "UPDATE bookmarks_resumetoken SET revoked_at = now() WHERE id = %s"
    calls = _between_lookup_and_write(monkeypatch, revoke, [issued.record.pk])
    response = resume(Client(), issued.token)
    assert calls and response.status_code == 404, response.content
    bookmark.refresh_from_db()
    assert bookmark.status == "active" and bookmark.resume_count == 0
    assert WorkflowInstance.objects.get(pk=instance.pk).status == "Suspended"
    events = chained_events().filter(resource_id__in=[str(bookmark.pk), str(instance.pk)])
    attempt = events.get(event_type="bookmark.resume")
    assert attempt.result == "failure" and attempt.context["reason"] == "token_revoked"
    assert not events.filter(event_type="workflow.instance.resumed").exists()


@pytest.mark.django_db(transaction=True)
def test_a_bookmark_soft_blocked_and_revoked_answers_404_on_the_fenced_path_and_its_fallback(
    monkeypatch, private_queue
):
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    Bookmark.objects.filter(pk=bookmark.pk).update(soft_blocked_at=timezone.now(), failure_count=3)
    bookmark_revoke(bookmark=bookmark, actor=ACTOR)
    response = resume(Client(), issued.token)  # refused by the fenced path's own lookup
    assert response.status_code == 404, response.content
    # Blocked and revoked after the lookup: the fenced statement writes nothing, the locked fallback refuses.
    _, other = suspended()
    other_token = token_for(other)
    end = "UPDATE bookmarks_bookmark SET soft_blocked_at = now(), status = 'revoked', revoked_at = now() WHERE id = %s"
    calls = _between_lookup_and_write(monkeypatch, end, [other.pk])
    response = resume(Client(), other_token.token)
    assert calls and response.status_code == 404, response.content
    reasons = chained_events().filter(event_type="bookmark.resume").values_list("context__reason", flat=True)
    assert list(reasons.order_by("id")) == ["bookmark_revoked", "bookmark_revoked"]


@pytest.mark.django_db(transaction=True)
def test_a_resume_whose_instance_moved_on_after_the_lookup_is_made_once_from_a_fresh_read(monkeypatch, private_queue):
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    # Another change of the instance (a step of another branch, say) commits in between: the fenced
    # write finds another revision and writes nothing; the locked path then resumes it once.
    step = "UPDATE workflows_workflowinstance SET revision = revision + 1 WHERE id = %s"
    calls = _between_lookup_and_write(monkeypatch, step, [instance.pk])
    response = resume(Client(), issued.token)
    assert calls and response.status_code == 200, response.content
    bookmark.refresh_from_db()
    assert bookmark.status == "consumed" and bookmark.resume_count == 1
    resumed = WorkflowInstance.objects.get(pk=instance.pk)
    assert resumed.status == "Running" and resumed.revision == instance.revision + 2
    assert "approve" not in resumed.state["waiting"] and len(resumed.state["tokens"]) == 1
    events = chained_events().filter(resource_id__in=[str(bookmark.pk), str(instance.pk)])
    assert events.filter(event_type="bookmark.resume", result="success").count() == 1
    assert events.filter(event_type="workflow.instance.resumed").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_listener_that_writes_with_a_resume_gets_the_resumes_transaction(client, private_queue):
    from workflows.signals import instance_resumed

    seen = []

    def listener(sender, instance, actor, **kwargs):
        seen.append(connection.in_atomic_block)

    instance_resumed.connect(listener)  # no `when`: it acts for every instance
    try:
        _instance, bookmark, _issued, statements = resumed_with_statements(client)
    finally:
        instance_resumed.disconnect(listener)
    assert seen == [True]
    # The locked path: the bookmark, then the instance, each locked FOR UPDATE in one transaction.
    assert not [sql for sql in statements if sql.startswith("WITH live AS")], statements
    assert [sql for sql in statements if sql.startswith("WITH burn AS") and sql.endswith("FOR UPDATE")]
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
    # No audit insert of its own: both events ride on the statement that burns and resumes.
    assert len(audited) == 1, audited
    assert "UPDATE workflows_workflowinstance" in audited[0] and 'burn AS (UPDATE "bookmarks_bookmark"' in audited[0]
    resources = [str(bookmark.pk), str(instance.pk)]
    events = chained_events().filter(resource_id__in=resources, action__in=["resume", "resumed"]).order_by("id")
    # The bookmark's event first, then the instance's, as the locked path records them.
    assert [event.event_type for event in events] == ["bookmark.resume", "workflow.instance.resumed"]
    by_type = {event.event_type: event for event in events}
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
