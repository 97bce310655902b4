"""HttpRequest's definition-time validation."""

import pytest

from workflows.activities.base import get_activity


@pytest.fixture
def activity():
    return get_activity("HttpRequest")


def test_is_registered_with_its_outcomes(activity):
    assert activity.outcomes == ("Success", "ClientError", "ServerError")
    assert set(activity.required_fields) == {"executor", "endpoint"}


def test_a_valid_node_has_no_problems(activity):
    node = {"id": "c", "type": "HttpRequest", "executor": "x", "endpoint": "y", "headers": {"X-Trace": "'t'"}}
    assert activity.validate(node) == []


@pytest.mark.parametrize(
    ("node", "pointer"),
    [
        ({"executor": "", "endpoint": "y"}, "/executor"),
        ({"executor": "x", "endpoint": 3}, "/endpoint"),
        ({"executor": "x", "endpoint": "y", "query": "a=1"}, "/query"),
        ({"executor": "x", "endpoint": "y", "headers": {"Host": "'evil'"}}, "/headers/Host"),
        ({"executor": "x", "endpoint": "y", "headers": {"Bad Header": "'v'"}}, "/headers/Bad Header"),
    ],
)
def test_invalid_nodes_are_reported_at_their_pointer(activity, node, pointer):
    assert pointer in [p for p, _ in activity.validate(node)]


@pytest.mark.django_db
def test_definitions_with_http_request_compile_their_expressions():
    from elsa_site.errors import InvalidInput
    from tests.workflows.factories import ACTOR
    from workflows.services import workflow_definition_create

    node = {"id": "c", "type": "HttpRequest", "executor": "x", "endpoint": "y", "body": "{'a': "}
    with pytest.raises(InvalidInput):
        workflow_definition_create(document={"name": "w", "activities": [node], "connections": []}, actor=ACTOR)
