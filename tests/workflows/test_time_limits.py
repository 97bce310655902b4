"""A run task that overruns its time limit faults the instance instead of pinning a worker forever."""

import uuid

import pytest

from tests.conftest import wait_until
from tests.workflows.factories import ACTOR, linear, published
from workflows.models import ActivityExecution, WorkflowInstance
from workflows.services import workflow_definition_execute

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.live_worker, pytest.mark.slow]

# Two nested macros (the limit) over the input: len(xs) ** 2 evaluations, in Rust, where no signal
# handler runs until it returns.
SLOW = {"id": "slow", "type": "SetVariable", "variable": "n", "value": "input.xs.all(a, input.xs.all(b, a >= 0))"}


@pytest.fixture
def own_queue(settings, live_worker):
    """A queue only this test's worker consumes (the session worker answers the readiness pings)."""
    queue = f"elsa-test-limits-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    settings.ELSA_WORKFLOW_QUEUE = queue
    return {"ELSA_WORKFLOW_QUEUE": queue}


@pytest.fixture(autouse=True)
def tasks_registered_here():
    """This process knows the engine's tasks (with the default limits), as a web process does: the
    worker's own limits must still apply to what it sends."""
    import workflows.tasks  # noqa: F401 - registers the engine's tasks in this process
    from elsa_site.celery import app

    assert "workflows.run_instance" in app.tasks


def faulted(instance_id) -> WorkflowInstance:
    return wait_until(
        lambda: WorkflowInstance.objects.filter(pk=instance_id, status="Faulted").first(),
        timeout=60,
        message="the instance to fault",
    )


def test_a_step_killed_at_the_hard_time_limit_faults_the_instance(celery_worker_factory, own_queue):
    definition = published(linear(SLOW, variables=[{"name": "n"}]))
    limits = {"ELSA_WORKFLOW_RUN_SOFT_TIME_LIMIT": "1", "ELSA_WORKFLOW_RUN_TIME_LIMIT": "2"}
    with celery_worker_factory(concurrency=1, extra_env={**own_queue, **limits}):
        # 20,000 ** 2 evaluations: minutes, were it not stopped.
        instance = workflow_definition_execute(definition=definition, input={"xs": list(range(20_000))}, actor=ACTOR)
        instance = faulted(instance.pk)
    assert instance.fault_message == (
        "activity 'slow' (SetVariable) was stopped: the run task exceeded its time limit of 2 seconds "
        "(ELSA_WORKFLOW_RUN_TIME_LIMIT)"
    )
    assert list(ActivityExecution.objects.filter(instance=instance).values_list("activity_id", "status")) == [
        ("slow", "Faulted")
    ]


def test_a_run_past_the_soft_time_limit_faults_the_instance(celery_worker_factory, own_queue):
    definition = published(linear(SLOW, variables=[{"name": "n"}]))
    limits = {"ELSA_WORKFLOW_RUN_SOFT_TIME_LIMIT": "1", "ELSA_WORKFLOW_RUN_TIME_LIMIT": "60"}
    with celery_worker_factory(concurrency=1, extra_env={**own_queue, **limits}):
        # 3,000 ** 2 evaluations, a few seconds: the soft limit is raised as soon as CEL returns.
        instance = workflow_definition_execute(definition=definition, input={"xs": list(range(3_000))}, actor=ACTOR)
        instance = faulted(instance.pk)
    assert instance.fault_message == (
        "activity 'slow' (SetVariable) was stopped: the run task exceeded its time limit of 1 seconds "
        "(ELSA_WORKFLOW_RUN_SOFT_TIME_LIMIT)"
    )
