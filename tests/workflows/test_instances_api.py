"""Instances over HTTP: execute input validation, filters, pagination, detail, cancel, delete, permissions."""

import datetime as dt

import pytest
from django.utils import timezone

from elsa_site.errors import InvalidInput
from tests.identity.factories import principal_headers
from tests.workflows.factories import ACTOR, five_step_document, linear, published
from workflows import runtime
from workflows.models import WorkflowInstance
from workflows.services import workflow_definition_execute, workflow_instance_resume

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

INSTANCES = "/elsa/api/workflow-instances"


@pytest.fixture
def headers():
    return principal_headers(
        "exec:workflow-definitions",
        "read:workflow-instances",
        "cancel:workflow-instances",
        "delete:workflow-instances",
        "read:activity-execution",
    )


def test_execute_validates_input_against_the_schema_without_echoing_it(api_client, headers):
    document = five_step_document()
    document["input_schema"] = {
        "type": "object",
        "required": ["amount"],
        "properties": {"amount": {"type": "integer"}, "note": {"type": "string", "maxLength": 3}},
    }
    definition = published(document)
    response = api_client.post(
        f"/elsa/api/workflow-definitions/{definition.pk}/execute",
        {"input": {"amount": "not-a-number-SENSITIVE", "note": "TOO-LONG-SENSITIVE"}},
        format="json",
        **headers,
    )
    assert response.status_code == 400
    problems = {p["pointer"]: p["message"] for p in response.json()["error"]["details"]}
    assert problems == {"/input/amount": "must be of type integer", "/input/note": "does not satisfy maxLength 3"}
    assert "SENSITIVE" not in response.content.decode()
    missing = api_client.post(
        f"/elsa/api/workflow-definitions/{definition.pk}/execute", {"input": {}}, format="json", **headers
    )
    assert missing.json()["error"]["details"] == [{"pointer": "/input/amount", "message": "is required"}]
    assert not WorkflowInstance.objects.exists()


def test_execute_refuses_a_nul_character_in_the_input_with_its_pointer(api_client, headers):
    definition = published(five_step_document())
    response = api_client.post(
        f"/elsa/api/workflow-definitions/{definition.pk}/execute",
        {"input": {"amount": 1, "notes": ["ok", "a\u0000b"]}},
        format="json",
        **headers,
    )
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["details"] == [
        {"pointer": "/input/notes/1", "message": "contains a NUL character (\\u0000), which cannot be stored"}
    ]
    assert not WorkflowInstance.objects.exists()


def test_resume_refuses_an_output_the_database_cannot_store():
    definition = published(linear({"id": "wait", "type": "Delay", "seconds": 3600}))
    instance = workflow_definition_execute(definition=definition, input={}, actor=ACTOR)
    runtime.run_instance(instance.pk)
    instance.refresh_from_db()
    for output in ({"note": "a\u0000b"}, {"amount": float("inf")}):
        with pytest.raises(InvalidInput):
            workflow_instance_resume(instance=instance, activity_id="wait", output=output, actor=ACTOR)
    assert WorkflowInstance.objects.get(pk=instance.pk).status == "Suspended"


def test_list_filters_by_status_definition_and_created_range(api_client, headers):
    first, second = published(five_step_document()), published(five_step_document())
    a = workflow_definition_execute(definition=first, input={"amount": 1}, actor=ACTOR)
    b = workflow_definition_execute(definition=second, input={"amount": 1}, actor=ACTOR)
    runtime.run_instance(a.pk)
    WorkflowInstance.objects.filter(pk=b.pk).update(created_at=timezone.now() - dt.timedelta(days=2))

    def ids(query: str) -> list[str]:
        response = api_client.get(f"{INSTANCES}?{query}", **headers)
        assert response.status_code == 200, response.json()
        return [item["id"] for item in response.json()["items"]]

    assert ids("status=Finished") == [str(a.pk)]
    assert ids("status=Running") == [str(b.pk)]
    assert ids(f"definition={second.pk}") == [str(b.pk)]
    yesterday = (timezone.now() - dt.timedelta(days=1)).isoformat().replace("+00:00", "Z")
    assert ids(f"created_after={yesterday}") == [str(a.pk)]
    assert ids(f"created_before={yesterday}") == [str(b.pk)]
    assert api_client.get(f"{INSTANCES}?status=Bogus", **headers).status_code == 400


def test_list_is_paginated(api_client, headers):
    definition = published(five_step_document())
    for _ in range(5):
        workflow_definition_execute(definition=definition, input={"amount": 1}, actor=ACTOR)
    page = api_client.get(f"{INSTANCES}?limit=2&offset=4", **headers).json()
    assert page["count"] == 5 and len(page["items"]) == 1 and page["offset"] == 4
    assert api_client.get(f"{INSTANCES}?limit=1000", **headers).status_code == 400


def test_detail_masks_secret_variables_and_input(api_client, headers):
    document = linear(
        {"id": "log", "type": "WriteLog", "message": "'x'"},
        variables=[{"name": "token", "secret": True}, {"name": "plain"}],
    )
    instance = workflow_definition_execute(
        definition=published(document), input={"token": "hunter2-secret", "plain": 1}, actor=ACTOR
    )
    body = api_client.get(f"{INSTANCES}/{instance.pk}", **headers).json()
    assert body["variables"] == {"token": "****"}
    assert body["input"] == {"token": "****", "plain": 1}
    assert "hunter2" not in str(body)


def test_cancel_is_audited_and_ended_instances_can_be_deleted(api_client, headers):
    from tests.audit_log import chained_events

    instance = workflow_definition_execute(definition=published(five_step_document()), input={"amount": 1}, actor=ACTOR)
    assert api_client.delete(f"{INSTANCES}/{instance.pk}", **headers).status_code == 409
    assert api_client.post(f"{INSTANCES}/{instance.pk}/cancel", **headers).json()["status"] == "Cancelled"
    event = chained_events().get(event_type="workflow.instance.cancelled", resource_id=str(instance.pk))
    assert event.actor_type == "application"
    assert api_client.delete(f"{INSTANCES}/{instance.pk}", **headers).status_code == 204
    assert api_client.get(f"{INSTANCES}/{instance.pk}", **headers).status_code == 404


def test_activity_executions_are_listed_in_order(api_client, headers):
    instance = workflow_definition_execute(definition=published(five_step_document()), input={"amount": 1}, actor=ACTOR)
    runtime.run_instance(instance.pk)
    items = api_client.get(f"{INSTANCES}/{instance.pk}/activity-executions", **headers).json()["items"]
    assert [(i["activity_id"], i["activity_type"], i["status"]) for i in items] == [
        ("set", "SetVariable", "Completed"),
        ("big", "If", "Completed"),
        ("log", "WriteLog", "Completed"),
        ("done", "Finish", "Completed"),
    ]
    assert all(i["started_at"] and i["finished_at"] for i in items)


def test_instance_endpoints_need_their_permissions(api_client):
    instance = workflow_definition_execute(definition=published(five_step_document()), input={"amount": 1}, actor=ACTOR)
    reader = principal_headers("read:workflow-instances")
    assert api_client.get(INSTANCES).status_code == 401
    assert api_client.get(INSTANCES, **reader).status_code == 200
    assert api_client.post(f"{INSTANCES}/{instance.pk}/cancel", **reader).status_code == 403
    assert api_client.delete(f"{INSTANCES}/{instance.pk}", **reader).status_code == 403
    assert api_client.get(f"{INSTANCES}/{instance.pk}/activity-executions", **reader).status_code == 403
