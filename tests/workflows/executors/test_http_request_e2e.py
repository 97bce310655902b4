"""HttpRequest workflows end to end: a real Celery worker calls a local partner, retrying through Reschedule."""

import json

import pytest

from tests.audit_log import chained_events
from tests.conftest import wait_until
from tests.workflows.executors.servers import serve
from workflows.executors.breaker import INITIAL, OPEN, CircuitBreaker
from workflows.models import ActivityExecution, WorkflowInstance

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.live_worker, pytest.mark.slow]

# Backoff 0.05, 0.1, 0.2, 0.4 s instead of 1, 2, 4, 8 s, so five attempts take well under a second.
FAST_RETRIES = {"ELSA_EXECUTOR_RETRY_BASE_SECONDS": "0.05", "ELSA_EXECUTOR_RETRY_JITTER": "0"}


@pytest.fixture(scope="module")
def fast_worker(celery_worker_factory):
    with celery_worker_factory(concurrency=2, extra_env=FAST_RETRIES) as worker:
        yield worker


@pytest.fixture
def run(fast_worker, transactional_db):
    from audit.actors import Actor
    from tests.workflows.factories import published
    from workflows.services import workflow_definition_execute

    def start(document, input=None):
        definition = published(document)
        instance = workflow_definition_execute(definition=definition, input=input or {}, actor=Actor.system("test"))
        return instance.pk

    return start


def wait_done(instance_id, timeout=60) -> WorkflowInstance:
    return wait_until(
        lambda: WorkflowInstance.objects.filter(pk=instance_id, status__in=["Finished", "Faulted"]).first(),
        timeout=timeout,
        message="the instance to finish or fault",
    )


def executions(instance_id, activity_id="call"):
    return list(
        ActivityExecution.objects.filter(instance_id=instance_id, activity_id=activity_id)
        .order_by("id")
        .values_list("status", "outcome", "error")
    )


def document(**http_fields):
    node = {"id": "call", "type": "HttpRequest", "executor": "e2e-partner", "endpoint": "analyze", **http_fields}
    return {
        "name": "http-e2e",
        "variables": [{"name": "score"}, {"name": "branch"}],
        "activities": [
            node,
            {"id": "ok", "type": "SetVariable", "variable": "score", "value": "outputs.call.body.score"},
            {"id": "client", "type": "SetVariable", "variable": "branch", "value": "'client'"},
            {"id": "server", "type": "SetVariable", "variable": "branch", "value": "'server'"},
        ],
        "connections": [
            {"source": "call", "outcome": "Success", "target": "ok"},
            {"source": "call", "outcome": "ClientError", "target": "client"},
            {"source": "call", "outcome": "ServerError", "target": "server"},
        ],
    }


def test_http_request_sends_expressions_and_stores_the_response(run, make_executor):
    def partner(recorded):
        if recorded.headers.get("x-api-key") != "e2e-key-0123456789":
            return 401, {}, {}
        sent = json.loads(recorded.body)
        return 200, {"X-Request-Id": "r1"}, {"score": sent["amount"] * 2, "path": recorded.path, "q": recorded.query}

    with serve(partner) as server:
        make_executor(
            server.url,
            name="e2e-partner",
            endpoints=[{"name": "analyze", "path": "/v1/{kind}/analyze", "method": "POST", "timeout": 5}],
            authentication={"type": "api_key", "config": {"key": "e2e-key-0123456789"}},
        )
        instance_id = run(
            document(
                path_params={"kind": "input.kind"},
                query={"currency": "'EUR'"},
                headers={"X-Correlation": "'corr-' + input.kind"},
                body="{'amount': input.amount}",
            ),
            {"amount": 21, "kind": "card"},
        )
        instance = wait_done(instance_id)
        assert server.requests[0].headers["x-correlation"] == "corr-card"
    assert instance.status == "Finished", instance.fault_message
    assert instance.variables["score"] == 42
    output = instance.outputs["call"]
    assert output["status"] == 200 and output["headers"]["x-request-id"] == "r1"
    assert output["body"]["path"] == "/v1/card/analyze" and output["body"]["q"] == {"currency": ["EUR"]}
    assert executions(instance_id) == [("Completed", "Success", "")]


def test_transient_failures_are_retried_until_success(run, make_executor):
    answers = iter([(503, {}, {}), (502, {}, {}), (429, {"Retry-After": "0"}, {})])

    with serve(lambda r: next(answers, (200, {}, {"score": 7}))) as server:
        executor = make_executor(server.url, name="e2e-partner")
        instance = wait_done(run(document()))
        assert server.count() == 4
    assert instance.status == "Finished", instance.fault_message
    runs = executions(instance.pk)
    assert [r[0] for r in runs] == ["Rescheduled", "Rescheduled", "Rescheduled", "Completed"]
    assert "attempt 1 of 5" in runs[0][2]
    attempts = chained_events().filter(event_type="executor.call", resource_id=str(executor.pk)).order_by("id")
    assert [(e.metadata["attempt"], e.metadata["status"]) for e in attempts] == [(0, 503), (1, 502), (2, 429), (3, 200)]


def test_client_errors_are_not_retried(run, make_executor):
    with serve(lambda r: (404, {}, {"error": "no such thing"})) as server:
        make_executor(server.url, name="e2e-partner")
        instance = wait_done(run(document()))
        assert server.count() == 1
    assert instance.status == "Finished"
    assert instance.variables["branch"] == "client"
    assert executions(instance.pk) == [("Completed", "ClientError", "")]


def test_server_errors_take_the_server_error_outcome_after_five_attempts(run, make_executor):
    with serve(lambda r: (500, {}, {"error": "boom"})) as server:
        make_executor(server.url, name="e2e-partner")
        instance = wait_done(run(document()))
        assert server.count() == 5
    assert instance.variables["branch"] == "server"
    assert [r[:2] for r in executions(instance.pk)] == [("Rescheduled", "")] * 4 + [("Completed", "ServerError")]
    assert instance.outputs["call"]["status"] == 500


def test_open_circuit_faults_the_instance_at_once_with_a_clear_error(run, make_executor):
    import time

    with serve(lambda r: (200, {}, {"score": 1})) as server:
        executor = make_executor(server.url, name="e2e-partner")
        CircuitBreaker(executor).store.update(lambda s: ({**INITIAL, "state": OPEN, "opened_at": time.time()}, None))
        instance = wait_done(run(document()))
        assert server.count() == 0
    assert instance.status == "Faulted"
    assert "Circuit breaker open for executor 'e2e-partner'" in instance.fault_message
    assert "Circuit breaker open" in executions(instance.pk)[0][2]


def test_unreachable_service_faults_after_five_attempts(run, make_executor):
    with serve(lambda r: (200, {}, {})) as server:
        url = server.url  # a port that was just free: nothing listens there once the server stops
    make_executor(url, name="e2e-partner")
    instance = wait_done(run(document()))
    assert instance.status == "Faulted"
    assert "failed after 5 attempts" in instance.fault_message
    assert len(executions(instance.pk)) == 5


def oidc_partner(make_executor, partner_url, issuer):
    config = {"issuer": issuer.state.url, "client_id": issuer.client_id, "client_secret": issuer.client_secret}
    return make_executor(
        partner_url, name="e2e-partner", authentication={"type": "oidc_client_credentials", "config": config}
    )


def test_an_identity_provider_failure_is_retried_and_faults_naming_the_credential_fetch(run, make_executor):
    from tests.workflows.executors.servers import OidcIssuer

    issuer = OidcIssuer()
    issuer.failures["/token"] = (500, {}, {"error": "server_error"})
    with serve(issuer.respond) as idp, serve(lambda r: (200, {}, {"score": 1})) as partner:
        issuer.state = idp
        executor = oidc_partner(make_executor, partner.url, issuer)
        instance = wait_done(run(document()))
        assert partner.count() == 0
        assert idp.count("/token") == 5  # retried with the partner's backoff, five attempts in all
    assert instance.status == "Faulted"
    expected = f"Credential fetch for executor 'e2e-partner' failed: The token endpoint of {idp.url} answered 500."
    assert f"{expected} Gave up after 5 attempts." in instance.fault_message
    runs = executions(instance.pk)
    assert [r[0] for r in runs] == ["Rescheduled"] * 4 + ["Faulted"]
    assert all(expected in r[2] for r in runs)
    assert issuer.client_secret not in instance.fault_message + "".join(r[2] for r in runs)
    assert CircuitBreaker(executor).state() == "closed"  # the partner's circuit does not pay for the provider
    attempts = chained_events().filter(event_type="executor.call", resource_id=str(executor.pk)).order_by("id")
    assert [(e.metadata["attempt"], e.metadata["error"]) for e in attempts] == [
        (n, "credentials_unavailable") for n in range(5)
    ]


def test_refused_client_credentials_fault_at_once_naming_the_credential_fetch(run, make_executor):
    from tests.workflows.executors.servers import OidcIssuer

    issuer = OidcIssuer()
    issuer.failures["/token"] = (400, {}, {"error": "invalid_client"})
    with serve(issuer.respond) as idp, serve(lambda r: (200, {}, {"score": 1})) as partner:
        issuer.state = idp
        executor = oidc_partner(make_executor, partner.url, issuer)
        instance = wait_done(run(document()))
        assert partner.count() == 0
        assert idp.count("/token") == 1  # no retry: new attempts cannot fix the client's credentials
    assert instance.status == "Faulted"
    assert "Credential fetch for executor 'e2e-partner' failed: " in instance.fault_message
    assert "(400, invalid_client)" in instance.fault_message
    assert [r[0] for r in executions(instance.pk)] == ["Faulted"]
    assert issuer.client_secret not in instance.fault_message
    assert CircuitBreaker(executor).state() == "closed"


def test_an_open_identity_provider_circuit_faults_at_once_naming_the_credential_fetch(run, make_executor):
    import time

    from tests.workflows.executors.servers import OidcIssuer
    from workflows.executors.breaker import IdentityProviderBreaker

    issuer = OidcIssuer()
    with serve(issuer.respond) as idp, serve(lambda r: (200, {}, {"score": 1})) as partner:
        issuer.state = idp
        executor = oidc_partner(make_executor, partner.url, issuer)
        breaker = IdentityProviderBreaker(idp.url)
        breaker.store.update(lambda s: ({**INITIAL, "state": OPEN, "opened_at": time.time()}, None))
        instance = wait_done(run(document()))
        assert idp.count("/token") == 0 and partner.count() == 0
    assert instance.status == "Faulted"
    assert (
        f"Credential fetch for executor 'e2e-partner' failed: Circuit breaker open for the identity provider {idp.url}"
        in instance.fault_message
    )
    assert [r[0] for r in executions(instance.pk)] == ["Faulted"]
    assert CircuitBreaker(executor).state() == "closed"
