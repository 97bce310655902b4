"""Bookmarks test data: workflows that wait at WaitForResume, run in-process to their suspension."""

from audit.actors import Actor
from bookmarks.models import Bookmark
from bookmarks.services import resume_token_issue
from tests.workflows.factories import ACTOR, linear, published
from workflows import runtime
from workflows.models import WorkflowInstance
from workflows.services import workflow_definition_execute

OPERATOR = Actor(type="user", id="operator", name="operator", ip="10.0.0.9")


def approval_document(name: str = "purchase-approval", **wait_fields) -> dict:
    """start (SetVariable) -> approve (WaitForResume) -> after (SetVariable from the resume input) -> done."""
    wait = {"id": "approve", "type": "WaitForResume", **wait_fields}
    return linear(
        {"id": "start", "type": "SetVariable", "variable": "amount", "value": "input.amount"},
        wait,
        {"id": "after", "type": "SetVariable", "variable": "decision", "value": "outputs.approve"},
        {"id": "done", "type": "Finish"},
        name=name,
        variables=[{"name": "amount"}, {"name": "decision"}],
    )


def loop_document(**wait_fields) -> dict:
    """start -> approve (WaitForResume, not burning) -> count -> back to approve: resumable again and again."""
    return linear(
        {"id": "start", "type": "SetVariable", "variable": "last", "value": "0"},
        {"id": "approve", "type": "WaitForResume", "auto_burn": False, **wait_fields},
        {"id": "count", "type": "SetVariable", "variable": "last", "value": "outputs.approve.n"},
        name="loop-approval",
        variables=[{"name": "last"}],
        connections=[
            {"source": "start", "target": "approve"},
            {"source": "approve", "target": "count"},
            {"source": "count", "target": "approve"},
        ],
    )


def start_instance(document: dict, input: dict | None = None) -> WorkflowInstance:
    definition = published(document)
    return workflow_definition_execute(definition=definition, input=input or {"amount": 1500}, actor=ACTOR)


def run_in_process(instance: WorkflowInstance) -> WorkflowInstance:
    """Run the instance's pending steps with the real runtime, in this process (no worker)."""
    runtime.run_instance(instance.pk)
    return WorkflowInstance.objects.get(pk=instance.pk)


def run_to_suspension(*instances: WorkflowInstance, timeout: float = 60) -> None:
    """run_in_process for tests whose transactions commit: the execute also enqueued each run, and the
    session's live worker, if an earlier test started it, may hold one (run_instance then leaves it to
    that runner). Returns once every instance waits at a bookmark."""
    from tests.conftest import wait_until

    for instance in instances:
        runtime.run_instance(instance.pk)
    ids = [instance.pk for instance in instances]
    wait_until(
        lambda: WorkflowInstance.objects.filter(pk__in=ids, status="Suspended").count() == len(ids),
        timeout=timeout,
        message=f"{len(ids)} instance(s) to suspend",
    )


def suspended(document: dict | None = None, input: dict | None = None) -> tuple[WorkflowInstance, Bookmark]:
    """An instance suspended at its WaitForResume, and that activity's bookmark."""
    instance = run_in_process(start_instance(document or approval_document(), input))
    assert instance.status == "Suspended", (instance.status, instance.fault_message)
    return instance, Bookmark.objects.get(instance=instance, status="active")


def token_for(bookmark: Bookmark, **kwargs):
    return resume_token_issue(bookmark=bookmark, actor=OPERATOR, **kwargs)
