"""JSON Schemas written by definition authors: a $ref is never fetched, and one that does not resolve is a 400."""

import pytest

from bookmarks.resume_input import InputSchemaViolation, input_validate
from tests.identity.factories import principal_headers
from tests.workflows.executors.servers import ok, serve
from tests.workflows.factories import five_step_document, published
from workflows.models import WorkflowDefinitionVersion, WorkflowInstance

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

URL = "/elsa/api/workflow-definitions"


@pytest.fixture
def headers():
    return principal_headers("write:workflow-definitions", "exec:workflow-definitions")


@pytest.fixture(autouse=True)
def unconsumed(settings):
    settings.ELSA_WORKFLOW_QUEUE = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-unconsumed"


def with_input_schema(schema: dict) -> dict:
    return {**five_step_document(), "input_schema": schema}


def test_input_schema_references_must_resolve_within_the_schema(api_client, headers):
    with serve(ok) as server:
        schema = {
            "$defs": {"amount": {"type": "integer"}},
            "properties": {
                "amount": {"$ref": "#/$defs/amount"},
                "missing": {"$ref": "#/$defs/nothing"},
                "remote": {"$ref": f"{server.url}/internal/admin"},
                "relative": {"$ref": "other.json"},
                "meta": {"$ref": "https://json-schema.org/draft/2020-12/schema"},
            },
        }
        response = api_client.post(URL, with_input_schema(schema), format="json", **headers)
        assert server.count() == 0
    assert response.status_code == 400, response.json()
    pointers = {p["pointer"] for p in response.json()["error"]["details"]}
    assert pointers == {
        "/input_schema/properties/missing/$ref",
        "/input_schema/properties/remote/$ref",
        "/input_schema/properties/relative/$ref",
    }


def test_a_stored_input_schema_reference_is_never_fetched_at_execute(api_client, headers):
    definition = published(five_step_document())
    with serve(ok) as server:
        # A version saved before references were checked when saving: execute still fetches nothing.
        WorkflowDefinitionVersion.objects.filter(pk=definition.published_version_id).update(
            document=with_input_schema({"$ref": f"{server.url}/internal/admin?x=1"})
        )
        response = api_client.post(f"{URL}/{definition.pk}/execute", {"input": {}}, format="json", **headers)
        assert server.count() == 0
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["details"] == [
        {"pointer": "/input", "message": "the schema's reference does not resolve"}
    ]
    assert not WorkflowInstance.objects.exists()


@pytest.mark.parametrize("schema", [{"$ref": "#/$defs/missing"}, {"$ref": "#"}])
def test_a_stored_input_schema_that_cannot_be_evaluated_is_a_400(api_client, headers, schema):
    definition = published(five_step_document())
    WorkflowDefinitionVersion.objects.filter(pk=definition.published_version_id).update(
        document=with_input_schema(schema)
    )
    response = api_client.post(f"{URL}/{definition.pk}/execute", {"input": {}}, format="json", **headers)
    assert response.status_code == 400, response.json()
    assert [p["pointer"] for p in response.json()["error"]["details"]] == ["/input"]


def test_a_resume_input_schema_reference_is_never_fetched():
    with serve(ok) as server:
        with pytest.raises(InputSchemaViolation):
            input_validate({"$ref": f"{server.url}/internal/admin"}, {"decision": "yes"})
        assert server.count() == 0


def _wait_for_resume_document(schema: dict) -> dict:
    return {
        "name": "approval",
        "activities": [
            {"id": "approve", "type": "WaitForResume", "input_schema": schema},
            {"id": "done", "type": "Finish"},
        ],
        "connections": [{"source": "approve", "target": "done"}],
    }


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"$ref": "https://schemas.example/approval.json"}, "does not resolve within the schema"),
        ({"properties": {"a": {"$ref": "#/$defs/missing"}}}, "does not resolve within the schema"),
        ({"$ref": "#"}, "loop without end"),
    ],
)
def test_a_wait_for_resume_input_schema_that_cannot_be_evaluated_is_refused_at_save(
    api_client, headers, schema, problem
):
    response = api_client.post(URL, _wait_for_resume_document(schema), format="json", **headers)
    assert response.status_code == 400, response.json()
    details = response.json()["error"]["details"]
    assert any(d["pointer"] == "/activities/0/input_schema" and problem in d["message"] for d in details), details


def test_a_resume_input_schema_whose_references_loop_is_a_400_not_a_500():
    with pytest.raises(InputSchemaViolation) as refused:
        input_validate({"$ref": "#"}, {"decision": "yes"})
    assert refused.value.details == [{"schema_path": "", "message": "the input schema's references loop without end"}]
