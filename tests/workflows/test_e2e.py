"""End to end through the HTTP API and a live Celery worker on PostgreSQL and Redis."""

import threading

import pytest
from django.db import connection

from tests.conftest import wait_until
from tests.identity.factories import principal_headers
from tests.workflows.factories import five_step_document, linear
from workflows import runtime
from workflows.models import ActivityExecution, WorkflowInstance

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.live_worker, pytest.mark.slow]

URL = "/elsa/api/workflow-definitions"
ALL = (
    "read:workflow-definitions",
    "write:workflow-definitions",
    "publish:workflow-definitions",
    "exec:workflow-definitions",
    "read:workflow-instances",
    "cancel:workflow-instances",
    "read:activity-execution",
)


@pytest.fixture
def headers(live_worker):
    return principal_headers(*ALL)


def publish(api_client, headers, document) -> str:
    created = api_client.post(URL, document, format="json", **headers)
    assert created.status_code == 201, created.json()
    definition_id = created.json()["id"]
    assert api_client.post(f"{URL}/{definition_id}/publish", format="json", **headers).status_code == 200
    return definition_id


def execute(api_client, headers, definition_id, input=None, **extra) -> str:
    response = api_client.post(
        f"{URL}/{definition_id}/execute", {"input": input or {}}, format="json", **headers, **extra
    )
    assert response.status_code == 202, response.json()
    return response.json()["instance_id"]


def wait_status(instance_id, *statuses, timeout=30) -> WorkflowInstance:
    return wait_until(
        lambda: WorkflowInstance.objects.filter(pk=instance_id, status__in=statuses).first(),
        timeout=timeout,
        message=f"instance {instance_id} to become {'/'.join(statuses)}",
    )


def executions(instance_id) -> list[tuple[str, str, str]]:
    return list(
        ActivityExecution.objects.filter(instance_id=instance_id)
        .order_by("id")
        .values_list("activity_id", "status", "outcome")
    )


def test_branching_workflow_runs_the_true_branch(api_client, headers):
    definition_id = publish(api_client, headers, five_step_document())
    instance_id = execute(api_client, headers, definition_id, {"amount": 5000})
    wait_status(instance_id, "Finished")
    assert [e[0] for e in executions(instance_id)] == ["set", "big", "label", "log", "done"]
    detail = api_client.get(f"/elsa/api/workflow-instances/{instance_id}", **headers).json()
    assert detail["variables"] == {"amount": 5000, "label": "big"}
    runs = api_client.get(f"/elsa/api/workflow-instances/{instance_id}/activity-executions", **headers).json()
    assert [r["outcome"] for r in runs["items"]] == ["Done", "True", "Done", "Done", "Done"]


def fork_join_document(mode: str) -> dict:
    return linear(
        {"id": "fork", "type": "Fork"},
        {"id": "left", "type": "SetVariable", "variable": "left", "value": "'L'"},
        {"id": "right1", "type": "SetVariable", "variable": "right", "value": "'R'"},
        {"id": "right2", "type": "WriteLog", "message": "'right branch'"},
        {"id": "join", "type": "Join", "mode": mode},
        {
            "id": "after",
            "type": "SetVariable",
            "variable": "joined",
            "value": "vars.left + '-' + (has(vars.right) ? vars.right : 'none')",
        },
        name=f"fork-join-{mode}",
        variables=[{"name": "left"}, {"name": "right"}, {"name": "joined"}],
        connections=[
            {"source": "fork", "target": "left"},
            {"source": "fork", "target": "right1"},
            {"source": "right1", "target": "right2"},
            {"source": "left", "target": "join"},
            {"source": "right2", "target": "join"},
            {"source": "join", "target": "after"},
        ],
    )


def test_fork_and_join_all_waits_for_every_branch(api_client, headers):
    instance_id = execute(api_client, headers, publish(api_client, headers, fork_join_document("all")))
    instance = wait_status(instance_id, "Finished")
    assert instance.variables["joined"] == "L-R"
    ran = [e[0] for e in executions(instance_id)]
    assert sorted(ran) == ["after", "fork", "join", "left", "right1", "right2"]
    assert ran.index("join") > max(ran.index("left"), ran.index("right2"))


def test_join_any_continues_once_on_the_first_branch(api_client, headers):
    instance_id = execute(api_client, headers, publish(api_client, headers, fork_join_document("any")))
    instance = wait_status(instance_id, "Finished")
    ran = [e[0] for e in executions(instance_id)]
    assert ran.count("join") == 1 and ran.count("after") == 1
    assert ran.index("join") > ran.index("left")
    assert instance.variables["joined"] in {"L-none", "L-R"}


def test_delay_suspends_on_a_durable_timer_and_finishes(api_client, headers):
    document = linear({"id": "wait", "type": "Delay", "seconds": "1"}, {"id": "done", "type": "Finish"}, name="delay")
    instance_id = execute(api_client, headers, publish(api_client, headers, document))
    suspended = wait_status(instance_id, "Suspended", "Finished")
    assert suspended.status == "Suspended" and suspended.next_timer_at is not None
    wait_status(instance_id, "Finished")
    assert executions(instance_id) == [("wait", "Completed", "Done"), ("done", "Completed", "Done")]


def test_cancel_stops_the_instance_and_invalidates_its_timer(api_client, headers):
    document = linear({"id": "wait", "type": "Delay", "seconds": 60}, {"id": "done", "type": "Finish"}, name="cancel")
    instance_id = execute(api_client, headers, publish(api_client, headers, document))
    suspended = wait_status(instance_id, "Suspended")
    timer_id = suspended.state["waiting"]["wait"]["timer"]
    response = api_client.post(f"/elsa/api/workflow-instances/{instance_id}/cancel", **headers)
    assert response.status_code == 200 and response.json()["status"] == "Cancelled"
    # The timer, fired now by hand, finds its fence gone and does nothing.
    assert runtime.fire_timer(instance_id, "wait", timer_id) is False
    assert WorkflowInstance.objects.get(pk=instance_id).status == "Cancelled"
    assert executions(instance_id) == [("wait", "Cancelled", "")]
    again = api_client.post(f"/elsa/api/workflow-instances/{instance_id}/cancel", **headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "illegal_transition"


def test_fault_activity_faults_the_instance_with_its_message(api_client, headers):
    document = linear({"id": "boom", "type": "Fault", "message": "'payment refused'"}, name="fault", connections=[])
    instance_id = execute(api_client, headers, publish(api_client, headers, document))
    wait_status(instance_id, "Faulted")
    detail = api_client.get(f"/elsa/api/workflow-instances/{instance_id}", **headers).json()
    assert detail["fault"] == {"activity_id": "boom", "message": "activity 'boom' (Fault): payment refused"}


def test_expression_error_faults_naming_activity_and_expression(api_client, headers):
    document = linear(
        {"id": "calc", "type": "SetVariable", "variable": "x", "value": "input.a / input.b"},
        {"id": "done", "type": "Finish"},
        name="expr-fault",
        variables=[{"name": "x"}],
    )
    instance_id = execute(api_client, headers, publish(api_client, headers, document), {"a": 1, "b": 0})
    instance = wait_status(instance_id, "Faulted")
    assert instance.fault_activity_id == "calc"
    assert "activity 'calc'" in instance.fault_message and "'input.a / input.b'" in instance.fault_message
    assert executions(instance_id) == [("calc", "Faulted", "")]


def test_idempotent_execute_returns_the_same_instance_even_when_racing(api_client, headers):
    definition_id = publish(api_client, headers, five_step_document())
    first = execute(api_client, headers, definition_id, {"amount": 1}, HTTP_IDEMPOTENCY_KEY="order-42")
    assert execute(api_client, headers, definition_id, {"amount": 1}, HTTP_IDEMPOTENCY_KEY="order-42") == first

    from rest_framework.test import APIClient

    results, barrier = [], threading.Barrier(4)

    def racer():
        barrier.wait()
        response = APIClient().post(
            f"{URL}/{definition_id}/execute",
            {"input": {"amount": 2}},
            format="json",
            HTTP_IDEMPOTENCY_KEY="race",
            **headers,
        )
        results.append((response.status_code, response.json().get("instance_id")))
        connection.close()

    threads = [threading.Thread(target=racer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {status for status, _ in results} == {202}
    assert len({instance for _, instance in results}) == 1
    assert WorkflowInstance.objects.filter(idempotency_key="race").count() == 1
    wait_status(results[0][1], "Finished")
