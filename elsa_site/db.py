"""The hot-path statement runner: one SQL statement on Django's PostgreSQL connection, bound by psycopg."""

from typing import Any

import psycopg
from django.db import connection


def execute_bound(sql: str, params: list, *, prepare: bool = False) -> tuple[int, tuple | None]:
    """Run one statement with server-side binding; returns (row count, first row or None).

    The hottest statements (audit recording, the engine's state writes) skip Django's cursor
    wrapper and psycopg's client-side quoting of every value: the values travel apart from the SQL
    text, as the protocol allows, and a fixed statement can be prepared once per connection
    (`prepare=True`). They still run in the caller's transaction, refuse to run in a transaction
    that already failed, and surface errors as Django's exceptions, like any ORM query.
    """
    connection.validate_no_broken_transaction()
    connection.ensure_connection()
    raw: Any = connection.connection
    with connection.wrap_database_errors, psycopg.Cursor(raw) as cursor:
        cursor.execute(sql, params, prepare=prepare)
        return cursor.rowcount, cursor.fetchone() if cursor.description else None
