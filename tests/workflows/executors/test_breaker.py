"""The circuit breaker: its state machine, its shared stores, and two worker processes sharing one state."""

import threading

import pytest

from tests.conftest import wait_until
from tests.workflows.executors.servers import serve
from tests.workflows.executors.workers import call_workers
from workflows.executors.breaker import (
    CLOSED,
    HALF_OPEN,
    INITIAL,
    OPEN,
    BreakerConfig,
    CircuitBreaker,
    CircuitOpenError,
    DatabaseBreakerStore,
    RedisBreakerStore,
    admit,
    displayed_state,
    record,
    store_key,
)
from workflows.executors.services import executor_call

CONFIG = BreakerConfig(fail_max=3, reset_timeout=10, probes=2, stale_probe_after=60)


def fail(state, now, admission, config=CONFIG):
    return record(state, now, config, admission=admission, success=False)


def test_opens_after_fail_max_consecutive_failures():
    state = dict(INITIAL)
    for _ in range(3):
        state, admission = admit(state, 0, CONFIG)
        assert admission.allowed
        state = fail(state, 0, admission)
    assert state["state"] == OPEN
    _, admission = admit(state, 5, CONFIG)
    assert not admission.allowed and admission.retry_in == 5


def test_a_success_resets_the_failure_count():
    state, admission = admit(dict(INITIAL), 0, CONFIG)
    state = fail(fail(state, 0, admission), 0, admission)
    state = record(state, 0, CONFIG, admission=admission, success=True)
    assert state["failures"] == 0 and state["state"] == CLOSED


def test_half_open_after_the_timeout_admits_the_configured_number_of_probes():
    state = {**INITIAL, "state": OPEN, "opened_at": 0.0}
    assert displayed_state(state, 10, CONFIG) == HALF_OPEN
    state, first = admit(state, 10, CONFIG)
    state, second = admit(state, 10, CONFIG)
    state, third = admit(state, 10, CONFIG)
    assert first.probe and second.probe and not third.allowed
    state = record(state, 11, CONFIG, admission=first, success=True)
    assert state["state"] == HALF_OPEN
    state = record(state, 11, CONFIG, admission=second, success=True)
    assert state["state"] == CLOSED


def test_a_failed_probe_opens_the_circuit_again():
    state, probe = admit({**INITIAL, "state": OPEN, "opened_at": 0.0}, 10, CONFIG)
    state = fail(state, 12, probe)
    assert (state["state"], state["opened_at"]) == (OPEN, 12)


def test_a_probe_that_never_reports_frees_its_slots_after_a_while():
    state, _ = admit({**INITIAL, "state": OPEN, "opened_at": 0.0}, 10, CONFIG)
    state, _ = admit(state, 10, CONFIG)
    assert not admit(state, 20, CONFIG)[1].allowed
    assert admit(state, 71, CONFIG)[1].probe


def test_a_call_admitted_while_closed_does_not_decide_the_half_open_state():
    state, old = admit(dict(INITIAL), 0, CONFIG)
    state = {**state, "state": HALF_OPEN, "half_open_at": 10}
    assert record(state, 11, CONFIG, admission=old, success=True)["state"] == HALF_OPEN
    assert record(state, 11, CONFIG, admission=old, success=False)["state"] == HALF_OPEN


@pytest.fixture(params=["redis", "database"])
def store_factory(request):
    def factory(executor):
        key = store_key(executor)
        return RedisBreakerStore(key) if request.param == "redis" else DatabaseBreakerStore(key)

    return factory


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_concurrent_failures_are_all_counted(make_executor, store_factory):
    executor = make_executor("http://127.0.0.1:9")
    config = BreakerConfig(fail_max=1000, reset_timeout=10, probes=1, stale_probe_after=60)
    barrier = threading.Barrier(6)

    def hammer():
        from django.db import connection

        breaker = CircuitBreaker(executor, store=store_factory(executor), config=config)
        barrier.wait()
        for _ in range(10):
            breaker.record(breaker.admit(), success=False)
        connection.close()

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert store_factory(executor).read()["failures"] == 60


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_half_open_admits_one_probe_among_concurrent_callers(make_executor, store_factory):
    executor = make_executor("http://127.0.0.1:9")
    config = BreakerConfig(fail_max=1, reset_timeout=0.01, probes=1, stale_probe_after=60)
    store = store_factory(executor)
    store.update(lambda s: ({**INITIAL, "state": OPEN, "opened_at": 0.0}, None))
    barrier = threading.Barrier(6)
    admitted, refused = [], []

    def try_admit():
        from django.db import connection

        barrier.wait()
        try:
            admitted.append(CircuitBreaker(executor, store=store_factory(executor), config=config).admit())
        except CircuitOpenError:
            refused.append(1)
        connection.close()

    threads = [threading.Thread(target=try_admit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert (len(admitted), len(refused)) == (1, 5)


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_drive_the_breaker_through_all_states(make_executor):
    """closed -> open (failures from both workers add up) -> half-open -> closed, state shared via Redis."""
    mode = {"fail": True}

    def flaky(recorded):
        return (503, {}, {"error": "down"}) if mode["fail"] else (200, {}, {"ok": True})

    # A short reset timeout (3 s, not 30) keeps the test quick; both workers get it from the environment.
    env = {"ELSA_BREAKER_FAIL_MAX": "5", "ELSA_BREAKER_RESET_SECONDS": "3", "ELSA_BREAKER_HALF_OPEN_PROBES": "1"}
    with serve(flaky) as server, call_workers(2, **env) as (a, b):
        executor = make_executor(server.url)
        call = {"op": "call", "executor_id": str(executor.pk), "endpoint": "analyze"}
        # Closed: four failures from worker A, the fifth from worker B opens the circuit.
        for _ in range(4):
            assert a.ask(**call) == {"pid": a.proc.pid, "kind": "transient", "status": 503, "breaker": "closed"}
        assert b.ask(**call)["breaker"] == "open"
        assert server.count() == 5
        # Open: both workers fail at once, without a request reaching the server.
        assert a.ask(**call)["kind"] == "circuit_open"
        assert "Circuit breaker open" in b.ask(**call)["error"]
        assert server.count() == 5
        # Half-open after the reset timeout: a failed probe (from A) opens it again.
        wait_until(lambda: b.ask(op="state", executor_id=call["executor_id"])["state"] == "half-open", timeout=10)
        assert a.ask(**call)["breaker"] == "open"
        assert server.count() == 6
        assert b.ask(**call)["kind"] == "circuit_open"
        # The partner recovers: the next probe (from B) succeeds and closes the circuit for A too.
        mode["fail"] = False
        wait_until(lambda: a.ask(op="state", executor_id=call["executor_id"])["state"] == "half-open", timeout=10)
        assert b.ask(**call) == {"pid": b.proc.pid, "kind": "success", "status": 200, "breaker": "closed"}
        assert a.ask(**call)["breaker"] == "closed"
        assert server.count() == 8


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_half_open_lets_one_probe_through_when_two_workers_call_together(make_executor):
    import time

    # The probe takes 1.5 s, so the other worker certainly asks while it is in flight.
    with serve(lambda r: (200, {}, {"ok": True}), delay=1.5) as server:
        executor = make_executor(server.url)
        store = RedisBreakerStore(store_key(executor))
        store.update(lambda s: ({**INITIAL, "state": OPEN, "opened_at": 0.0}, None))
        with call_workers(2) as workers:
            start_at = time.time() + 1.0
            for worker in workers:
                worker.send(op="call", executor_id=str(executor.pk), endpoint="analyze", start_at=start_at)
            answers = sorted(w.receive()["kind"] for w in workers)
        assert answers == ["circuit_open", "success"]
        assert server.count() == 1


@pytest.mark.django_db
def test_without_a_shared_cache_the_state_lives_in_the_database(make_executor, settings):
    from workflows.executors.breaker import default_store

    executor = make_executor("http://127.0.0.1:9")
    assert isinstance(default_store(executor), RedisBreakerStore)
    settings.CACHE_IS_SHARED = False
    assert isinstance(default_store(executor), DatabaseBreakerStore)


@pytest.mark.django_db
def test_a_call_refused_by_the_open_circuit_is_audited_and_sends_nothing(make_executor, actor):
    import time

    from tests.audit_log import chained_events

    with serve(lambda r: (200, {}, {})) as server:
        executor = make_executor(server.url)
        CircuitBreaker(executor).store.update(lambda s: ({**INITIAL, "state": OPEN, "opened_at": time.time()}, None))
        with pytest.raises(CircuitOpenError, match="Circuit breaker open for executor"):
            executor_call(executor=executor, endpoint="analyze", actor=actor)
        assert server.count() == 0
    event = chained_events().filter(event_type="executor.call").latest("id")
    assert event.result == "failure"
    assert (event.metadata["breaker_state"], event.metadata["error"]) == ("open", "circuit_open")


def test_a_call_that_told_nothing_hands_its_probe_slot_back():
    config = BreakerConfig(fail_max=3, reset_timeout=10, probes=1, stale_probe_after=60)
    state, probe = admit({**INITIAL, "state": OPEN, "opened_at": 0.0}, 10, config)
    assert not admit(state, 10, config)[1].allowed
    state = record(state, 10, config, admission=probe, success=None)
    assert state["state"] == HALF_OPEN and admit(state, 10, config)[1].probe
