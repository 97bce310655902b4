"""Figure workflow: five-activity workflows started and completed per second vs no-op Celery round trips."""

import time
from concurrent.futures import ThreadPoolExecutor

from bench.harness import figure

INSTANCES = 600
STARTERS = 4
ROUNDS = 3
PINGS = 600  # no-op round trips per round of the baseline, measured right before each batch
DOCUMENT = {
    "name": "bench-five-steps",
    "variables": [{"name": "amount"}, {"name": "label"}],
    "activities": [
        {"id": "set", "type": "SetVariable", "variable": "amount", "value": "input.amount"},
        {"id": "big", "type": "If", "condition": "vars.amount > 1000"},
        {"id": "label", "type": "SetVariable", "variable": "label", "value": "'big'"},
        {"id": "log", "type": "WriteLog", "message": "'amount ' + string(vars.amount)"},
        {"id": "done", "type": "Finish"},
    ],
    "connections": [
        {"source": "set", "target": "big"},
        {"source": "big", "outcome": "True", "target": "label"},
        {"source": "big", "outcome": "False", "target": "log"},
        {"source": "label", "target": "log"},
        {"source": "log", "target": "done"},
    ],
}


def _start(definition, actor, count: int) -> list:
    from django.db import connection

    from workflows.services import workflow_definition_execute

    try:
        # Each execute is its own transaction and enqueues the run on commit, as the API does.
        return [
            workflow_definition_execute(definition=definition, input={"amount": 5000}, actor=actor).pk
            for _ in range(count)
        ]
    finally:
        connection.close()


# The poll's one statement, written out: the ORM compiling the same aggregate 50 times a second
# took a few percent of the two cores the worker is measured on.
_ENDED = (
    "SELECT count(*) FILTER (WHERE status = 'Finished'), count(*) FILTER (WHERE status = 'Faulted') "
    "FROM workflows_workflowinstance WHERE definition_id = %s"
)


def _ended(definition) -> tuple[int, int]:
    """Finished and faulted instances of the definition: one small indexed query per poll."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(_ENDED, [definition.pk])
        finished, faulted = cursor.fetchone()
    return finished, faulted


def _run_batch(definition, actor, count: int) -> float:
    from workflows.models import WorkflowInstance

    finished_before, _ = _ended(definition)
    started = time.perf_counter()
    # Several clients start workflows at once, as API callers would.
    with ThreadPoolExecutor(STARTERS) as pool:
        chunks = pool.map(lambda n: _start(definition, actor, n), [count // STARTERS] * STARTERS)
        ids = [pk for chunk in chunks for pk in chunk]
    # The poll shares the worker's two cores, like the baseline's publisher waiting for results:
    # it counts the definition's ended instances (one indexed query) rather than matching 600 ids.
    deadline = time.monotonic() + 600
    while True:
        finished, faulted = _ended(definition)
        if faulted:
            raise RuntimeError("a benchmark workflow faulted")
        if finished - finished_before >= len(ids):
            break
        if time.monotonic() > deadline:
            raise RuntimeError("workflows did not finish within 600 s")
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    if WorkflowInstance.objects.filter(pk__in=ids, status="Finished").count() != len(ids):
        raise RuntimeError("not every started workflow finished")
    return len(ids) / elapsed


def measure(h) -> dict:
    from audit.actors import Actor
    from workflows.models import ActivityExecution
    from workflows.services import workflow_definition_create, workflow_definition_publish

    actor = Actor.system("bench")
    definition = workflow_definition_publish(
        definition=workflow_definition_create(document=DOCUMENT, actor=actor), actor=actor
    )
    _run_batch(definition, actor, 48)  # warm up both worker processes
    # Rounds of (no-op round trips, workflow batch), as the auth figures alternate with
    # /health/live: the machine's speed drifts over a run (the no-op baseline measured once at the
    # start moved by 15% between runs, and with it the ratio), so each batch is set beside a
    # baseline taken moments before it on the same, otherwise idle, worker.
    rates, baselines = [], []
    for _ in range(ROUNDS):
        baselines.append(h.celery_rate(PINGS))
        rates.append(_run_batch(definition, actor, INSTANCES))
    executions = ActivityExecution.objects.filter(instance__definition=definition).count()
    expected = 5 * (ROUNDS * INSTANCES + 48)
    if executions != expected:
        raise RuntimeError(f"expected {expected} activity executions, found {executions}")
    return figure(
        "workflow",
        sum(rates) / ROUNDS,
        sum(baselines) / ROUNDS,
        "workflows/s",
        f"{INSTANCES} five-activity workflows (SetVariable, If, SetVariable, WriteLog, Finish) started by "
        f"{STARTERS} threads, 1 worker x 2 processes, PostgreSQL + Redis; interleaved with no-op Celery round "
        f"trips ({PINGS} per round), {ROUNDS} rounds: "
        + ", ".join(f"{rate:.0f}/{baseline:.0f}" for rate, baseline in zip(rates, baselines, strict=True)),
    )
