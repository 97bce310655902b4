"""Admin pages: definitions edited through the services with validation errors shown; instances masked."""

import json

import pytest

from identity.models import User
from tests.audit_log import chained_events
from tests.workflows.factories import ACTOR, five_step_document, linear, published
from workflows import runtime
from workflows.admin import WorkflowDefinitionAdmin
from workflows.models import WorkflowDefinition, WorkflowInstance
from workflows.services import workflow_definition_execute

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


@pytest.fixture
def admin_client(client):
    user = User.objects.create_superuser("wf-admin", "wf-admin@example.com", "a long admin password 1")
    client.force_login(user)
    return client


def test_invalid_document_shows_every_problem(admin_client):
    document = {"name": "bad", "activities": [{"id": "a", "type": "Nope"}]}
    response = admin_client.post(
        "/admin/workflows/workflowdefinition/add/",
        {"document": json.dumps(document), "versions-TOTAL_FORMS": "0", "versions-INITIAL_FORMS": "0"},
    )
    assert response.status_code == 200
    assert "/activities/0/type: unknown activity type" in response.content.decode()
    assert not WorkflowDefinition.objects.exists()


def test_valid_document_creates_a_definition_then_a_new_version(admin_client):
    management = {
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": "0",
        "versions-MIN_NUM_FORMS": "0",
        "versions-MAX_NUM_FORMS": "1000",
    }
    response = admin_client.post(
        "/admin/workflows/workflowdefinition/add/", {"document": json.dumps(five_step_document()), **management}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    definition = WorkflowDefinition.objects.get()
    assert definition.latest_version == 1
    changed = five_step_document()
    changed["name"] = "renamed"
    url = f"/admin/workflows/workflowdefinition/{definition.pk}/change/"
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(
        url,
        {
            "document": json.dumps(changed),
            "versions-TOTAL_FORMS": "1",
            "versions-INITIAL_FORMS": "1",
            "versions-MIN_NUM_FORMS": "0",
            "versions-MAX_NUM_FORMS": "1000",
            "versions-0-id": str(definition.versions.get().pk),
            "versions-0-definition": str(definition.pk),
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    definition.refresh_from_db()
    assert definition.latest_version == 2 and definition.name == "renamed"


def test_instance_page_masks_secrets_and_lists_executions(admin_client):
    document = linear(
        {"id": "log", "type": "WriteLog", "message": "'hello'"},
        variables=[{"name": "token", "secret": True}],
    )
    instance = workflow_definition_execute(
        definition=published(document), input={"token": "admin-visible-secret"}, actor=ACTOR
    )
    runtime.run_instance(instance.pk)
    page = admin_client.get(f"/admin/workflows/workflowinstance/{instance.pk}/change/").content.decode()
    assert "****" in page and "admin-visible-secret" not in page
    assert "WriteLog" in page


def test_cancel_action_calls_the_service(admin_client):
    instance = workflow_definition_execute(definition=published(five_step_document()), input={"amount": 1}, actor=ACTOR)
    response = admin_client.post(
        "/admin/workflows/workflowinstance/", {"action": "cancel", "_selected_action": [str(instance.pk)]}
    )
    assert response.status_code == 302
    assert WorkflowInstance.objects.get(pk=instance.pk).status == "Cancelled"


def test_admin_delete_goes_through_the_service_refusing_live_instances(admin_client):
    live = workflow_definition_execute(definition=published(five_step_document()), input={"amount": 1}, actor=ACTOR)
    url = f"/admin/workflows/workflowinstance/{live.pk}/delete/"
    # Refused while live: the page says why, nothing is deleted.
    response = admin_client.post(url, {"post": "yes"})
    assert response.status_code == 200
    assert "is running or suspended; cancel it first" in response.content.decode()
    assert WorkflowInstance.objects.filter(pk=live.pk).exists()

    admin_client.post("/admin/workflows/workflowinstance/", {"action": "cancel", "_selected_action": [str(live.pk)]})
    assert admin_client.post(url, {"post": "yes"}).status_code == 302
    assert not WorkflowInstance.objects.filter(pk=live.pk).exists()
    assert chained_events().filter(resource_type="workflow-instance", resource_id=str(live.pk), action="deleted")


def test_deleting_a_definition_with_live_instances_is_refused_with_the_reason(admin_client):
    definition = published(five_step_document())
    workflow_definition_execute(definition=definition, input={"amount": 1}, actor=ACTOR)
    url = f"/admin/workflows/workflowdefinition/{definition.pk}/delete/"
    for response in (
        admin_client.get(url),
        admin_client.post(url, {"post": "yes"}),
        admin_client.post(
            "/admin/workflows/workflowdefinition/",
            {"action": "delete_selected", "_selected_action": [str(definition.pk)], "post": "yes"},
        ),
    ):
        assert response.status_code == 200
        assert "has running or suspended instances; cancel them first" in response.content.decode()
    assert WorkflowDefinition.objects.filter(pk=definition.pk).exists()


@pytest.mark.parametrize("bulk", [False, True])
def test_a_refusal_arising_after_the_confirmation_is_a_message(admin_client, monkeypatch, bulk):
    # An instance started between the confirmation page's check and the delete: the service refuses.
    definition = published(five_step_document())
    workflow_definition_execute(definition=definition, input={"amount": 1}, actor=ACTOR)
    monkeypatch.setattr(WorkflowDefinitionAdmin, "delete_refusal", lambda self, obj: None)
    if bulk:
        url = "/admin/workflows/workflowdefinition/"
        data = {"action": "delete_selected", "_selected_action": [str(definition.pk)], "post": "yes"}
    else:
        url, data = f"/admin/workflows/workflowdefinition/{definition.pk}/delete/", {"post": "yes"}
    response = admin_client.post(url, data, follow=True)
    assert response.status_code == 200
    assert [str(m) for m in response.context["messages"]] == [
        "The workflow definition has running or suspended instances; cancel them first."
    ]
    assert WorkflowDefinition.objects.filter(pk=definition.pk).exists()
    assert not chained_events().filter(event_type="config.changed").exists()


def test_admin_deletes_are_recorded_as_config_changed(admin_client):
    definition = published(five_step_document())
    instance = workflow_definition_execute(definition=definition, input={"amount": 1}, actor=ACTOR)
    admin_client.post(
        "/admin/workflows/workflowinstance/", {"action": "cancel", "_selected_action": [str(instance.pk)]}
    )
    response = admin_client.post(
        "/admin/workflows/workflowinstance/",
        {"action": "delete_selected", "_selected_action": [str(instance.pk)], "post": "yes"},
    )
    assert response.status_code == 302
    response = admin_client.post(f"/admin/workflows/workflowdefinition/{definition.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not WorkflowDefinition.objects.filter(pk=definition.pk).exists()
    for resource_type, pk, service_event in (
        ("workflow-instance", instance.pk, "workflow.instance.deleted"),
        ("workflow-definition", definition.pk, "workflow.definition.deleted"),
    ):
        events = set(chained_events().filter(resource_id=str(pk)).values_list("event_type", "action", "resource_type"))
        assert {("config.changed", "deleted", resource_type), (service_event, "deleted", resource_type)} <= events
