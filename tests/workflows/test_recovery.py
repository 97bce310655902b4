"""Crash recovery: a worker killed with SIGKILL mid-run, and a timer across a worker restart."""

import uuid

import pytest

from tests.conftest import wait_until
from tests.workflows.factories import ACTOR, linear, published
from workflows import runtime
from workflows.models import ActivityExecution, WorkflowInstance
from workflows.services import workflow_definition_execute

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.live_worker, pytest.mark.slow]

CHAIN = 100
# Each step filters this list (about 20 ms), so the run is long enough to be killed midway.
SLOW_INPUT = {"items": list(range(50_000))}


@pytest.fixture
def own_queue(settings, live_worker):
    """A queue only this test's workers consume (the session worker answers the readiness pings)."""
    queue = f"elsa-test-recovery-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    settings.ELSA_WORKFLOW_QUEUE = queue
    return {"ELSA_WORKFLOW_QUEUE": queue}


def chain_document() -> dict:
    steps = [
        {
            "id": f"s{i}",
            "type": "SetVariable",
            "variable": "n",
            "value": "(has(vars.n) ? vars.n : 0) + input.items.filter(x, x < 0).size() + 1",
        }
        for i in range(CHAIN)
    ]
    return linear(*steps, {"id": "done", "type": "Finish"}, name="long-chain", variables=[{"name": "n"}])


def execution_count(instance_id) -> int:
    return ActivityExecution.objects.filter(instance_id=instance_id).count()


def test_worker_killed_mid_run_leaves_an_instance_another_worker_finishes_exactly_once(
    celery_worker_factory, own_queue
):
    definition = published(chain_document())
    with celery_worker_factory(concurrency=1, extra_env=own_queue) as first:
        instance = workflow_definition_execute(definition=definition, input=SLOW_INPUT, actor=ACTOR)
        wait_until(lambda: execution_count(instance.pk) >= 20, timeout=60, message="the run to be under way")
        first.kill()
    done_before = execution_count(instance.pk)
    assert WorkflowInstance.objects.get(pk=instance.pk).status == "Running"
    assert done_before < CHAIN + 1, "the kill came too late to interrupt the run"

    with celery_worker_factory(concurrency=1, extra_env=own_queue):
        # The beat sweep's job, done now: the killed task's message is only redelivered after the visibility timeout.
        assert runtime.sweep_stalled_instances(stall_seconds=0) == 1
        finished = wait_until(
            lambda: WorkflowInstance.objects.filter(pk=instance.pk, status="Finished").first(),
            timeout=120,
            message="the instance to finish on the second worker",
        )
    ids = list(ActivityExecution.objects.filter(instance_id=instance.pk).values_list("activity_id", flat=True))
    assert len(ids) == CHAIN + 1 and len(set(ids)) == CHAIN + 1, "every activity ran exactly once"
    assert finished.variables == {"n": CHAIN}


def test_delay_timer_survives_a_worker_restart(celery_worker_factory, own_queue):
    document = linear(
        {"id": "wait", "type": "Delay", "seconds": 2}, {"id": "done", "type": "Finish"}, name="delay-restart"
    )
    definition = published(document)
    with celery_worker_factory(concurrency=1, extra_env=own_queue) as first:
        instance = workflow_definition_execute(definition=definition, input={}, actor=ACTOR)
        wait_until(
            lambda: WorkflowInstance.objects.filter(pk=instance.pk, status="Suspended").exists(),
            message="the Delay to suspend",
        )
        first.kill()  # the ETA task it held is lost with it until the visibility timeout

    with celery_worker_factory(concurrency=1, extra_env=own_queue):

        def finished():
            runtime.sweep_due_timers(grace_seconds=0)  # what the periodic sweep does
            return WorkflowInstance.objects.filter(pk=instance.pk, status="Finished").exists()

        wait_until(finished, timeout=60, interval=0.5, message="the timer to fire after the restart")
    assert list(ActivityExecution.objects.filter(instance_id=instance.pk).values_list("activity_id", "status")) == [
        ("wait", "Completed"),
        ("done", "Completed"),
    ]
