"""Definitions over HTTP: validation with JSON pointers, versions, publish, retract, delete, permissions."""

import pytest

from elsa_site.errors import InvalidInput
from tests.audit_log import chained_events
from tests.identity.factories import principal_headers
from tests.workflows.factories import ACTOR, five_step_document, linear
from workflows.models import WorkflowDefinition
from workflows.services import workflow_definition_create

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

URL = "/elsa/api/workflow-definitions"


@pytest.fixture
def headers():
    return principal_headers(
        "read:workflow-definitions",
        "write:workflow-definitions",
        "delete:workflow-definitions",
        "publish:workflow-definitions",
        "retract:workflow-definitions",
        "exec:workflow-definitions",
    )


def create(api_client, headers, document=None):
    response = api_client.post(URL, document or five_step_document(), format="json", **headers)
    assert response.status_code == 201, response.json()
    return response.json()


def pointers(response) -> dict:
    assert response.status_code == 400, response.json()
    return {p["pointer"]: p["message"] for p in response.json()["error"]["details"]}


def test_create_stores_a_draft_version_and_audits_it(api_client, headers):
    body = create(api_client, headers)
    assert body["status"] == "Draft" and body["latest_version"] == 1 and body["published_version"] is None
    assert body["document"]["name"] == "five-steps"
    assert chained_events().filter(event_type="workflow.definition.created", resource_id=body["id"]).exists()


def test_invalid_document_lists_every_problem_with_a_pointer(api_client, headers):
    document = {
        "name": "broken",
        "activities": [
            {"id": "a", "type": "SetVariable", "variable": "x", "value": "1 +"},
            {"id": "b", "type": "NoSuchType"},
            {"id": "c", "type": "If"},
            {"id": "d", "type": "Finish"},
        ],
        "connections": [
            {"source": "a", "target": "c"},
            {"source": "c", "outcome": "Maybe", "target": "d"},
            {"source": "c", "outcome": "True", "target": "ghost"},
            {"source": "d", "target": "a"},
            {"source": "a", "target": "b"},
        ],
    }
    problems = pointers(api_client.post(URL, document, format="json", **headers))
    assert "expression does not compile" in problems["/activities/0/value"]
    assert problems["/activities/0/variable"] == "is not declared in /variables"
    assert problems["/activities/1/type"] == "unknown activity type"
    assert problems["/activities/2/condition"] == "is required"
    assert "no outcome 'Maybe'" in problems["/connections/1/outcome"]
    assert problems["/connections/2/target"] == "no activity has this id"
    assert "no outcome 'Done'" in problems["/connections/3/source"]
    assert "no start activity" in problems["/activities"]
    assert not WorkflowDefinition.objects.exists()


def test_shape_errors_point_at_the_field(api_client, headers):
    problems = pointers(
        api_client.post(URL, {"activities": [{"type": "Finish"}], "extra": 1}, format="json", **headers)
    )
    assert problems["/name"] == "is required"
    assert problems["/activities/0/id"] == "is required"
    assert problems[""] == "has a property that is not allowed"


def test_two_start_activities_are_refused(api_client, headers):
    document = linear({"id": "a", "type": "Finish"}, {"id": "b", "type": "Finish"}, connections=[])
    assert (
        "more than one start activity"
        in pointers(api_client.post(URL, document, format="json", **headers))["/activities"]
    )


def test_document_over_the_size_limit_is_refused(api_client, headers, settings):
    settings.ELSA_DEFINITION_MAX_BYTES = 500
    document = five_step_document()
    document["description"] = "x" * 600
    problems = pointers(api_client.post(URL, document, format="json", **headers))
    assert "the limit is 500 bytes" in problems[""]


def test_expression_over_the_length_limit_is_refused(api_client, headers, settings):
    settings.ELSA_EXPRESSION_MAX_LENGTH = 20
    document = five_step_document()
    document["activities"][3]["message"] = "'" + "a" * 30 + "'"
    assert (
        "longer than 20" in pointers(api_client.post(URL, document, format="json", **headers))["/activities/3/message"]
    )


def test_switch_cases_are_outcomes_and_their_conditions_compile(api_client, headers):
    document = linear(
        {
            "id": "s",
            "type": "Switch",
            "cases": [{"name": "low", "condition": "input.n <"}, {"name": "low", "condition": "true"}],
        },
        {"id": "f", "type": "Finish"},
        connections=[{"source": "s", "outcome": "high", "target": "f"}],
    )
    problems = pointers(api_client.post(URL, document, format="json", **headers))
    assert "expression does not compile" in problems["/activities/0/cases/0/condition"]
    assert problems["/activities/0/cases/1/name"] == "duplicate case name"
    assert "no outcome 'high'" in problems["/connections/0/outcome"]


def test_a_nul_character_in_a_definition_is_refused_with_its_pointer(api_client, headers):
    document = linear({"id": "a", "type": "WriteLog", "message": "'a\u0000b'"}, name="nul")
    problems = pointers(api_client.post(URL, document, format="json", **headers))
    assert problems == {"/activities/0/message": "contains a NUL character (\\u0000), which cannot be stored"}
    assert not WorkflowDefinition.objects.exists()


def test_a_number_that_is_not_finite_in_a_definition_is_refused_with_its_pointer():
    # The admin's JSON field accepts NaN (Python's json does); the API's parser does not.
    document = linear({"id": "a", "type": "Delay", "seconds": float("nan")}, name="nan")
    with pytest.raises(InvalidInput) as refused:
        workflow_definition_create(document=document, actor=ACTOR)
    assert refused.value.details == [
        {"pointer": "/activities/0/seconds", "message": "is not a finite number (NaN and Infinity cannot be stored)"}
    ]


def test_put_creates_a_new_draft_while_the_published_version_keeps_running(api_client, headers):
    created = create(api_client, headers)
    url = f"{URL}/{created['id']}"
    assert api_client.post(f"{url}/publish", format="json", **headers).json()["published_version"] == 1
    changed = five_step_document()
    changed["name"] = "five-steps-v2"
    body = api_client.put(url, changed, format="json", **headers).json()
    assert body["latest_version"] == 2 and body["published_version"] == 1
    assert [v["status"] for v in body["versions"]] == ["Published", "Draft"]
    assert api_client.get(f"{url}?version=1", **headers).json()["document"]["name"] == "five-steps"
    published = api_client.post(f"{url}/publish", format="json", **headers).json()
    assert published["published_version"] == 2
    assert [v["status"] for v in published["versions"]] == ["Superseded", "Published"]
    types = set(chained_events().filter(resource_id=created["id"]).values_list("event_type", flat=True))
    assert {"workflow.definition.updated", "workflow.definition.published"} <= types


def test_retract_stops_new_instances(api_client, headers):
    created = create(api_client, headers)
    url = f"{URL}/{created['id']}"
    api_client.post(f"{url}/publish", format="json", **headers)
    assert api_client.post(f"{url}/retract", format="json", **headers).json()["published_version"] is None
    response = api_client.post(f"{url}/execute", {"input": {"amount": 1}}, format="json", **headers)
    assert response.status_code == 409
    assert api_client.post(f"{url}/retract", format="json", **headers).status_code == 409
    assert chained_events().filter(event_type="workflow.definition.retracted", resource_id=created["id"]).exists()


def test_delete_with_a_live_instance_is_refused(api_client, headers):
    created = create(api_client, headers)
    url = f"{URL}/{created['id']}"
    api_client.post(f"{url}/publish", format="json", **headers)
    assert api_client.post(f"{url}/execute", {"input": {"amount": 1}}, format="json", **headers).status_code == 202
    assert api_client.delete(url, **headers).status_code == 409
    assert WorkflowDefinition.objects.filter(pk=created["id"]).exists()


def test_delete_removes_an_unused_definition(api_client, headers):
    created = create(api_client, headers)
    assert api_client.delete(f"{URL}/{created['id']}", **headers).status_code == 204
    assert api_client.get(f"{URL}/{created['id']}", **headers).status_code == 404
    assert chained_events().filter(event_type="workflow.definition.deleted", resource_id=created["id"]).exists()


def test_list_is_paginated_and_filtered(api_client, headers):
    for _ in range(3):
        create(api_client, headers)
    page = api_client.get(f"{URL}?limit=2", **headers).json()
    assert page["count"] == 3 and len(page["items"]) == 2
    assert api_client.get(f"{URL}?limit=2&offset=2", **headers).json()["items"][0]["name"] == "five-steps"
    assert api_client.get(f"{URL}?published=true", **headers).json()["count"] == 0


def test_each_operation_needs_its_permission(api_client):
    reader = principal_headers("read:workflow-definitions")
    assert api_client.get(URL).status_code == 401
    assert api_client.get(URL, **reader).status_code == 200
    assert api_client.post(URL, five_step_document(), format="json", **reader).status_code == 403
    writer = principal_headers("write:workflow-definitions")
    created = api_client.post(URL, five_step_document(), format="json", **writer).json()
    url = f"{URL}/{created['id']}"
    assert api_client.post(f"{url}/publish", format="json", **writer).status_code == 403
    assert api_client.delete(url, **writer).status_code == 403
    assert api_client.post(f"{url}/execute", {}, format="json", **reader).status_code == 403
