"""Expiry: the scheduled task marks due bookmarks and applies on_expiry (fault, or the Timeout outcome)."""

import datetime as dt

import pytest
from django.utils import timezone

from bookmarks.models import Bookmark, ResumeToken
from bookmarks.tasks import bookmarks_expire_due, expire_due, resume_tokens_prune
from tests.audit_log import chained_events
from tests.bookmarks.factories import (
    approval_document,
    linear,
    loop_document,
    run_in_process,
    start_instance,
    suspended,
    token_for,
)
from tests.workflows.factories import ACTOR
from workflows.models import ActivityExecution, WorkflowInstance
from workflows.services import workflow_instance_resume

pytestmark = pytest.mark.django_db


def make_due(bookmark: Bookmark) -> None:
    Bookmark.objects.filter(pk=bookmark.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))


def timeout_document() -> dict:
    return linear(
        {"id": "approve", "type": "WaitForResume", "on_expiry": "timeout", "ttl_seconds": 60},
        {"id": "approved", "type": "SetVariable", "variable": "result", "value": "'approved'"},
        {"id": "timed_out", "type": "SetVariable", "variable": "result", "value": "'timed out'"},
        name="timeout-approval",
        variables=[{"name": "result"}],
        connections=[
            {"source": "approve", "target": "approved"},
            {"source": "approve", "outcome": "Timeout", "target": "timed_out"},
        ],
    )


def test_bookmark_not_yet_due_is_left_alone():
    instance, bookmark = suspended()
    assert bookmarks_expire_due() == 0
    bookmark.refresh_from_db()
    assert bookmark.status == "active"


def test_on_expiry_fault_faults_the_instance():
    instance, bookmark = suspended(approval_document(on_expiry="fault"))
    make_due(bookmark)
    assert bookmarks_expire_due() == 1
    bookmark.refresh_from_db()
    assert bookmark.status == "expired" and bookmark.expired_at is not None
    instance = WorkflowInstance.objects.get(pk=instance.pk)
    assert instance.status == "Faulted"
    assert instance.fault_activity_id == "approve"
    assert "expired" in instance.fault_message
    execution = ActivityExecution.objects.get(instance=instance, activity_id="approve")
    assert execution.status == "Faulted"
    assert chained_events().filter(event_type="bookmark.expired", resource_id=str(bookmark.pk)).count() == 1


def test_one_bookmark_failing_to_expire_does_not_stall_the_others(monkeypatch, caplog):
    from bookmarks import services

    _, broken = suspended()
    _, other = suspended()
    make_due(broken)
    make_due(other)
    Bookmark.objects.filter(pk=broken.pk).update(expires_at=timezone.now() - dt.timedelta(hours=1))  # first in line
    expire = services.bookmark_expire

    def failing_for_the_broken_one(*, bookmark_id, actor):
        if bookmark_id == broken.pk:
            raise RuntimeError("unexpected")
        return expire(bookmark_id=bookmark_id, actor=actor)

    monkeypatch.setattr(services, "bookmark_expire", failing_for_the_broken_one)
    assert bookmarks_expire_due() == 1
    assert Bookmark.objects.get(pk=other.pk).status == "expired"
    assert Bookmark.objects.get(pk=broken.pk).status == "active"
    [record] = [r for r in caplog.records if r.getMessage() == "bookmark expiry failed"]
    assert record.bookmark_id == str(broken.pk) and record.exc_info


def test_on_expiry_timeout_takes_the_timeout_outcome():
    instance = run_in_process(start_instance(timeout_document()))
    bookmark = Bookmark.objects.get(instance=instance)
    make_due(bookmark)
    assert bookmarks_expire_due() == 1
    instance = run_in_process(instance)
    assert instance.status == "Finished"
    assert instance.variables["result"] == "timed out"
    execution = ActivityExecution.objects.get(instance=instance, activity_id="approve")
    assert execution.outcome == "Timeout"


def test_expired_bookmark_refuses_resume_and_expiry_is_idempotent(client):
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    make_due(bookmark)
    response = client.post(f"/elsa/api/bookmarks/resume?t={issued.token}", {}, content_type="application/json")
    assert response.status_code == 404
    assert expire_due()["expired"] == 1
    assert expire_due()["expired"] == 0
    assert chained_events().filter(event_type="bookmark.expired").count() == 1


def test_a_resume_through_the_engine_burns_the_auto_burn_bookmark():
    instance, bookmark = suspended()
    # Resumed some other way (an operator through the engine): the instance_resumed hook burns it.
    workflow_instance_resume(instance=instance, activity_id="approve", output={"via": "engine"}, actor=ACTOR)
    bookmark.refresh_from_db()
    assert bookmark.status == "consumed"
    assert run_in_process(instance).status == "Finished"


def test_expiry_after_the_instance_moved_on_only_expires_the_bookmark():
    document = loop_document()
    instance = run_in_process(start_instance(document))
    bookmark = Bookmark.objects.get(instance=instance)
    # The non-burning bookmark is resumed; the instance is Running again, not waiting at it.
    workflow_instance_resume(instance=instance, activity_id="approve", output={"n": 1}, actor=ACTOR)
    make_due(bookmark)
    assert bookmarks_expire_due() == 1
    bookmark.refresh_from_db()
    assert bookmark.status == "expired"
    assert WorkflowInstance.objects.get(pk=instance.pk).status == "Running"


def test_pruning_drops_token_rows_only_after_they_expire():
    instance, bookmark = suspended()
    live = token_for(bookmark)
    stale = token_for(bookmark)
    ResumeToken.objects.filter(pk=stale.record.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert resume_tokens_prune() == 1
    assert list(ResumeToken.objects.values_list("pk", flat=True)) == [live.record.pk]


def test_expiry_task_is_scheduled(settings):
    schedule = settings.CELERY_BEAT_SCHEDULE["bookmarks-expire"]
    assert schedule["task"] == "bookmarks.expire_due"
    assert schedule["schedule"] > 0
