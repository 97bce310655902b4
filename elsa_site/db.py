"""The hot-path statement runner: one SQL statement on Django's PostgreSQL connection, bound by psycopg."""

from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections


def execute_bound(sql: str, params: list, *, prepare: bool = False) -> tuple[int, tuple | None]:
    """Run one statement with server-side binding; returns (row count, first row or None).

    The hottest statements (audit recording, the engine's state writes) skip Django's cursor
    wrapper and psycopg's client-side quoting of every value: the values travel apart from the SQL
    text, as the protocol allows, and a fixed statement can be prepared once per connection
    (`prepare=True`). They still run in the caller's transaction, refuse to run in a transaction
    that already failed, and surface errors as Django's exceptions, like any ORM query.
    """
    # The default connection itself, looked up once: each attribute of the `connection` proxy is
    # another thread-local lookup, and this runs several times per workflow step.
    db = connections[DEFAULT_DB_ALIAS]
    db.validate_no_broken_transaction()
    db.ensure_connection()
    raw: Any = db.connection
    with db.wrap_database_errors, psycopg.Cursor(raw) as cursor:
        cursor.execute(sql, params, prepare=prepare)
        return cursor.rowcount, cursor.fetchone() if cursor.description else None
