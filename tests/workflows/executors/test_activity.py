"""HttpRequest: definition-time validation, and the audit of its calls when a step is run."""

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


@pytest.mark.django_db(transaction=True)
def test_a_change_during_a_call_waits_for_the_step_and_the_partner_is_called_once(make_executor):
    import threading

    from django.db import connections
    from django.db.models import F

    from tests.audit_log import chained_events
    from tests.bookmarks.factories import run_in_process, start_instance
    from tests.workflows.executors.servers import serve
    from tests.workflows.factories import linear
    from workflows.models import WorkflowInstance

    calls, changes = [], []

    def change_the_instance():
        # Another change of the instance (a resume of another branch, a timer) while the partner
        # answers: it waits for the step's row lock, so the step's save cannot go stale and the
        # call is neither repeated nor left without its audit event.
        try:
            changes.append(WorkflowInstance.objects.update(revision=F("revision") + 1))
        finally:
            connections.close_all()

    def partner(recorded):
        calls.append(recorded.path)
        if len(calls) == 1:
            changer = threading.Thread(target=change_the_instance)
            changer.start()
            changes.append(changer)
        return 200, {}, {"charged": True}

    with serve(partner) as server:
        executor = make_executor(server.url, name="payments")
        node = {"id": "charge", "type": "HttpRequest", "executor": executor.name, "endpoint": "analyze"}
        instance = run_in_process(start_instance(linear(node, name="charge")))
        changes[0].join(timeout=30)
    assert instance.status == "Finished", instance.fault_message
    assert len(calls) == 1
    assert changes[1:] == [1]  # the concurrent change went through, after the step
    assert chained_events().filter(event_type="executor.call", action="call").count() == 1
