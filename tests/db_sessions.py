"""Other PostgreSQL sessions for tests that need a second client: a lock holder, an observer."""

import psycopg
from django.conf import settings
from django.db import connection


def other_session(**kwargs) -> psycopg.Connection:
    """A plain psycopg connection to the test database, outside Django: its own session and locks."""
    db = settings.DATABASES["default"]
    return psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=connection.settings_dict["NAME"], **kwargs
    )


def sessions_blocked_by_me() -> int:
    """How many sessions wait for a lock Django's session holds (pg_locks is read afresh on every call)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT DISTINCT pid FROM pg_locks WHERE NOT granted) waiting "
            "WHERE pg_backend_pid() = ANY(pg_blocking_pids(waiting.pid))"
        )
        return cursor.fetchone()[0]
