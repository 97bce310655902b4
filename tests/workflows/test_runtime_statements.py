"""The runtime's own statements (reload, runnable-work check, resumed records, task messages) agree with the ORM."""

import uuid

import pytest

from tests.workflows.factories import ACTOR, linear, published
from workflows import runtime
from workflows.models import ActivityExecution, WorkflowInstance
from workflows.services import workflow_definition_execute, workflow_instance_cancel, workflow_instance_resume

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WAIT_THEN_FINISH = linear({"id": "wait", "type": "Delay", "seconds": 3600}, {"id": "done", "type": "Finish"})


@pytest.fixture(autouse=True)
def runs_stay_in_this_process(settings):
    """Send the engine's tasks to a queue no worker consumes: these tests drive the runtime themselves."""
    from elsa_site.celery import app

    settings.ELSA_WORKFLOW_QUEUE = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-statements"
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(settings.ELSA_WORKFLOW_QUEUE)
    yield
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(settings.ELSA_WORKFLOW_QUEUE)


def started(document=WAIT_THEN_FINISH, input=None) -> WorkflowInstance:
    return workflow_definition_execute(definition=published(document), input=input or {}, actor=ACTOR)


def test_reloaded_instance_equals_the_orm_read():
    instance = started(
        linear(
            {"id": "wait", "type": "Delay", "seconds": 3600},
            variables=[{"name": "amount"}, {"name": "token", "secret": True}],
        ),
        {"amount": 7, "token": "s3cret-value"},
    )
    runtime.run_instance(instance.pk)
    reloaded = runtime._load_instance(instance.pk)
    expected = WorkflowInstance.objects.get(pk=instance.pk)
    assert reloaded is not None and not reloaded._state.adding
    for field in WorkflowInstance._meta.concrete_fields:
        assert getattr(reloaded, field.attname) == getattr(expected, field.attname), field.name
    assert runtime._load_instance(uuid.uuid4()) is None


def test_runnable_work_means_running_with_a_pending_token():
    instance = started()
    assert runtime._has_runnable_work(instance.pk)  # Running, its first token pending
    runtime.run_instance(instance.pk)
    assert not runtime._has_runnable_work(instance.pk)  # Suspended on the timer
    workflow_instance_resume(instance=instance, activity_id="wait", actor=ACTOR)
    assert runtime._has_runnable_work(instance.pk)  # Running again, the resume queued as a token
    WorkflowInstance.objects.filter(pk=instance.pk).update(state={"waiting": {}, "joins": {}})
    assert not runtime._has_runnable_work(instance.pk)  # Running without any token
    assert not runtime._has_runnable_work(uuid.uuid4())


def test_stale_step_reloads_and_runs_each_activity_once():
    document = linear(
        {"id": "a", "type": "SetVariable", "variable": "n", "value": "1"},
        {"id": "b", "type": "SetVariable", "variable": "n", "value": "vars.n + 1"},
        variables=[{"name": "n"}],
    )
    instance = started(document)
    stale = WorkflowInstance.objects.get(pk=instance.pk)
    # Someone else wrote the instance meanwhile (a new revision, same run state).
    WorkflowInstance.objects.filter(pk=instance.pk).update(revision=stale.revision + 1)
    _, status = runtime._run_locked(instance.pk, stale)
    assert status == "Finished"
    instance.refresh_from_db()
    assert instance.variables == {"n": 2}
    executed = ActivityExecution.objects.filter(instance=instance).order_by("id").values_list("activity_id", flat=True)
    assert list(executed) == ["a", "b"]


def test_resume_completes_the_latest_suspended_record_in_place():
    instance = started()
    runtime.run_instance(instance.pk)
    suspended = ActivityExecution.objects.get(instance=instance)
    workflow_instance_resume(instance=instance, activity_id="wait", output={"answer": 42}, actor=ACTOR)
    runtime.run_instance(instance.pk)
    record = ActivityExecution.objects.get(pk=suspended.pk)
    assert (record.status, record.outcome, record.output, record.error) == ("Completed", "Done", {"answer": 42}, "")
    assert record.finished_at is not None and record.finished_at >= record.started_at
    assert ActivityExecution.objects.filter(instance=instance).count() == 2  # wait (completed) and done


def test_cancelled_suspended_record_is_not_completed_by_a_later_run():
    instance = started()
    runtime.run_instance(instance.pk)
    workflow_instance_cancel(instance=instance, actor=ACTOR)
    runtime.run_instance(instance.pk)
    assert list(ActivityExecution.objects.filter(instance=instance).values_list("status", flat=True)) == ["Cancelled"]


def test_run_message_names_the_instance_in_its_display_arguments(settings):
    from elsa_site.celery import app

    instance = started()
    with app.connection_for_write() as conn:
        message = conn.default_channel.basic_get(settings.ELSA_WORKFLOW_QUEUE, no_ack=True)
    assert message is not None
    assert message.headers["task"] == runtime.RUN_TASK
    assert message.headers["argsrepr"] == repr([str(instance.pk)]) and message.headers["kwargsrepr"] == "{}"
    args, kwargs, _ = message.decode()
    assert (args, kwargs) == ([str(instance.pk)], {})
