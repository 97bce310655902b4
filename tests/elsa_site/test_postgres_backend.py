"""The PostgreSQL backend's health check: no round trip on a sound connection, a new one after the server closed it."""

import time

import psycopg
import pytest
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

from tests.db_sessions import other_session

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def wrapper():
    # A connection of its own, as the engine keeps one per worker thread, with health checks on
    # as in production.
    db = connections.create_connection(DEFAULT_DB_ALIAS)
    db.settings_dict = {**db.settings_dict, "CONN_HEALTH_CHECKS": True}  # a copy: the settings stay
    db.ensure_connection()
    yield db
    db.close()


def _last_statement(observer, pid: int) -> str:
    return observer.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0]


def test_settings_select_the_backend():
    assert settings.DATABASES["default"]["ENGINE"] == "elsa_site.postgresql"


def test_a_sound_connection_is_checked_without_a_round_trip(wrapper):
    pid = wrapper.connection.info.backend_pid
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT 'the last statement'")
    with other_session() as observer:
        assert wrapper.is_usable()
        wrapper.health_check_done = False  # a new request or task: the next cursor checks first
        with wrapper.cursor():
            pass
        assert wrapper.health_check_done
        assert wrapper.connection is not None and wrapper.connection.info.backend_pid == pid
        # Django's own check would have sent SELECT 1, the server's record of the last statement.
        assert _last_statement(observer, pid) == "SELECT 'the last statement'"


def test_a_connection_the_server_closed_is_replaced(wrapper):
    pid = wrapper.connection.info.backend_pid
    with other_session() as observer:
        observer.execute("SELECT pg_terminate_backend(%s)", [pid])
    deadline = time.monotonic() + 5
    while wrapper.is_usable():  # the server's goodbye reaches the socket
        assert time.monotonic() < deadline, "the terminated connection still looks usable"
        time.sleep(0.01)
    wrapper.health_check_done = False  # a new request or task: the next cursor checks first
    with wrapper.cursor() as cursor:  # the check closes the dead connection, a new one opens
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != pid


def test_a_connection_left_in_an_aborted_transaction_is_not_usable(wrapper):
    raw = wrapper.connection
    raw.execute("BEGIN")
    with pytest.raises(psycopg.errors.DivisionByZero):
        raw.execute("SELECT 1 / 0")
    assert not wrapper.is_usable()
