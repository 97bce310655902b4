"""A secret variable used by a real run never appears in the database, the logs or API responses."""

import json

import pytest
from django.db import connection

from tests.conftest import wait_until
from tests.identity.factories import principal_headers
from tests.workflows.factories import linear
from workflows import encryption
from workflows.models import WorkflowInstance

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.live_worker, pytest.mark.slow]

PLAINTEXT = "pt-Secret-7f3a9c"
URL = "/elsa/api/workflow-definitions"


def rows_containing(text: str) -> list[str]:
    """Every table whose rows, cast to text (all columns), contain `text`."""
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE %s', [f"%{text}%"])  # noqa: S608 - table names come from introspection
            if cursor.fetchone()[0]:
                found.append(table)
    return found


def secret_document() -> dict:
    return linear(
        {"id": "log", "type": "WriteLog", "message": "'calling partner with ' + vars.partner_token"},
        {"id": "copy", "type": "SetVariable", "variable": "copy", "value": "vars.partner_token"},
        {"id": "rotate", "type": "SetVariable", "variable": "partner_token", "value": "vars.partner_token + '-2'"},
        {"id": "branch", "type": "If", "condition": "vars.partner_token.startsWith('pt-')"},
        {"id": "fail", "type": "Fault", "message": "'partner refused ' + vars.partner_token + ' and ' + vars.copy"},
        name="secret-run",
        variables=[{"name": "partner_token", "secret": True}, {"name": "copy"}],
        input_schema={"type": "object", "required": ["partner_token"]},
        connections=[
            {"source": "log", "target": "copy"},
            {"source": "copy", "target": "rotate"},
            {"source": "rotate", "target": "branch"},
            {"source": "branch", "outcome": "True", "target": "fail"},
        ],
    )


def test_secret_plaintext_is_nowhere_after_a_run(api_client, live_worker):
    headers = principal_headers("*")
    definition_id = api_client.post(URL, secret_document(), format="json", **headers).json()["id"]
    api_client.post(f"{URL}/{definition_id}/publish", format="json", **headers)
    response = api_client.post(
        f"{URL}/{definition_id}/execute", {"input": {"partner_token": PLAINTEXT}}, format="json", **headers
    )
    instance_id = response.json()["instance_id"]
    instance = wait_until(
        lambda: WorkflowInstance.objects.filter(pk=instance_id, status="Faulted").first(), message="the run to fault"
    )

    # It really ran with the secret: the If saw the plaintext prefix and took True.
    assert instance.fault_message == "activity 'fail' (Fault): partner refused **** and ****"
    assert encryption.decrypt(instance.secret_variables["partner_token"]) == json.dumps(PLAINTEXT + "-2")
    assert instance.input == {"partner_token": "****"}
    assert instance.variables == {"copy": "****"}

    assert rows_containing(PLAINTEXT) == []
    worker_log = live_worker.log()
    assert "calling partner with ****" in worker_log
    assert PLAINTEXT not in worker_log

    bodies = [
        api_client.get(f"/elsa/api/workflow-instances/{instance_id}", **headers),
        api_client.get(f"/elsa/api/workflow-instances/{instance_id}/activity-executions", **headers),
        api_client.get("/elsa/api/workflow-instances", **headers),
        api_client.get("/elsa/api/audit-events?limit=100", **headers),
    ]
    for body in bodies:
        assert body.status_code == 200
        assert PLAINTEXT not in body.content.decode()
    detail = bodies[0].json()
    assert detail["variables"] == {"copy": "****", "partner_token": "****"}
