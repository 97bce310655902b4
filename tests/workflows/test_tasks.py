"""The engine's Celery tasks keep one database connection per worker thread, under Django's policy for a request."""

import threading
from types import SimpleNamespace

import pytest
from django.db import DEFAULT_DB_ALIAS, connection, connections

from workflows import runtime, tasks

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

LOCK_KEY = 0x7465737474736B73


def worker_task():
    return SimpleNamespace(request=SimpleNamespace(is_eager=False, called_directly=False))


@pytest.fixture
def kept(monkeypatch):
    """A fresh per-thread connection store, closed after the test."""
    store = threading.local()
    monkeypatch.setattr(tasks, "_kept", store)
    yield store
    if getattr(store, "connection", None) is not None:
        store.connection.close()


@pytest.fixture
def conn_max_age(monkeypatch):
    def set_age(seconds, health_checks=False):
        monkeypatch.setitem(connections.settings[DEFAULT_DB_ALIAS], "CONN_MAX_AGE", seconds)
        monkeypatch.setitem(connections.settings[DEFAULT_DB_ALIAS], "CONN_HEALTH_CHECKS", health_checks)

    return set_age


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def test_tasks_reuse_their_connection_within_conn_max_age(kept, conn_max_age):
    conn_max_age(60)
    default = connections[DEFAULT_DB_ALIAS]
    with tasks.engine_connection(worker_task()):
        first = backend_pid()
        assert connections[DEFAULT_DB_ALIAS] is not default
    assert connections[DEFAULT_DB_ALIAS] is default
    with tasks.engine_connection(worker_task()):
        assert backend_pid() == first


def test_conn_max_age_zero_closes_the_connection_after_each_task(kept, conn_max_age):
    conn_max_age(0)
    with tasks.engine_connection(worker_task()):
        backend_pid()
    assert kept.connection.connection is None


def test_a_task_that_raised_leaves_no_session_lock_behind(kept, conn_max_age):
    conn_max_age(60)
    with pytest.raises(RuntimeError), tasks.engine_connection(worker_task()):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        raise RuntimeError("the run failed while holding its lock")
    assert kept.connection.connection is None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
        assert cursor.fetchone()[0] is True
        cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])


def test_an_eager_task_uses_the_callers_connection(kept):
    default = connections[DEFAULT_DB_ALIAS]
    eager = SimpleNamespace(request=SimpleNamespace(is_eager=True, called_directly=False))
    with tasks.engine_connection(eager):
        assert connections[DEFAULT_DB_ALIAS] is default
    assert getattr(kept, "connection", None) is None


def test_a_connection_the_server_dropped_is_replaced_before_the_run_lock_is_taken(kept, conn_max_age):
    conn_max_age(60, health_checks=True)
    with tasks.engine_connection(worker_task()):
        dropped = backend_pid()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [dropped])
    instance_id = "00000000-0000-4000-8000-000000000001"
    with tasks.engine_connection(worker_task()):
        assert runtime.run_instance(instance_id) == 0  # no such instance: nothing to run, and no error
        assert backend_pid() != dropped


def test_a_reused_connection_is_health_checked_by_the_run_lock_query_itself(kept, conn_max_age, monkeypatch):
    conn_max_age(60, health_checks=True)
    with tasks.engine_connection(worker_task()):
        reused = backend_pid()
    probes = []
    monkeypatch.setattr(kept.connection, "is_usable", lambda: probes.append(1) or True)
    instance_id = "00000000-0000-4000-8000-000000000002"
    with tasks.engine_connection(worker_task()):
        assert runtime.run_instance(instance_id) == 0
        assert backend_pid() == reused
        assert kept.connection.health_check_done
    assert probes == []  # no SELECT 1 round trip before the lock-and-load
