"""The hot-path statement runner: one SQL statement on Django's PostgreSQL connection, bound by psycopg."""

import time
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections
from psycopg.pq import ExecStatus


def execute_bound(
    sql: str, params: list, *, prepare: bool | None = None, using: str = DEFAULT_DB_ALIAS
) -> tuple[int, tuple | None]:
    """Run one statement with server-side binding; returns (row count, first row or None).

    The hottest statements (audit recording, the engine's state writes) skip Django's cursor
    wrapper and psycopg's client-side quoting of every value: the values travel apart from the SQL
    text, as the protocol allows, and a fixed statement is prepared once per connection: at once
    with `prepare=True`, after a few runs by default (psycopg's prepare_threshold, which the
    settings enable unless ELSA_DB_PREPARED_STATEMENTS is false; `prepare=False` never). They
    still run in the caller's transaction, refuse to run in a transaction that already failed, and
    surface errors as Django's exceptions, like any ORM query.
    """
    # The connection itself, looked up once: each attribute of the `connection` proxy is
    # another thread-local lookup, and this runs several times per workflow step.
    db = connections[using]
    db.validate_no_broken_transaction()
    db.ensure_connection()
    cursor = _cursor(db.connection)
    started = time.monotonic()
    try:
        with db.wrap_database_errors:
            cursor.execute(sql, params, prepare=prepare)
            # The result's status, not cursor.description (which builds a Column per column).
            result = cursor.pgresult
            if result is not None and result.status == ExecStatus.TUPLES_OK:
                return cursor.rowcount, cursor.fetchone()
            return cursor.rowcount, None
    finally:
        if db.queries_logged:
            # Visible like any query to Django's query log (DEBUG, CaptureQueriesContext).
            db.queries_log.append({"sql": sql, "time": f"{time.monotonic() - started:.3f}"})


# Server-side binding: a parameter that stands where PostgreSQL cannot infer its type from a column
# (a SELECT list, the VALUES of a subquery) takes its type from the value, and a NULL has none, so
# non-text columns get an explicit cast. Text columns keep the assignment's own length check (a
# cast to varchar(n) would truncate silently).
_PARAMETER_CASTS = {
    "JSONField": "::jsonb",
    "DateTimeField": "::timestamptz",
    "PositiveIntegerField": "::integer",
    "IntegerField": "::integer",
    "BigIntegerField": "::bigint",
    "BooleanField": "::boolean",
    "UUIDField": "::uuid",
}


def parameter(model, field_name: str) -> str:
    """The placeholder for a value of `model.field_name` in an execute_bound statement: `%s` and its cast."""
    return "%s" + _PARAMETER_CASTS.get(model._meta.get_field(field_name).get_internal_type(), "")


def _cursor(raw: Any) -> psycopg.Cursor:
    """One server-binding cursor per psycopg connection, kept on it: building a cursor copies the
    connection's adapters, every time. A Django connection belongs to one thread, and so does its
    cursor; a new connection (reconnect, fork) gets a cursor of its own."""
    return _kept_cursor(raw, "_elsa_bound_cursor", psycopg.Cursor)


def client_cursor(raw: Any) -> psycopg.ClientCursor:
    """One client-binding cursor per psycopg connection, kept on it like _cursor's: for the few
    statements that need the simple query protocol (several statements in one query). It binds
    values as escaped literals (psycopg's quoting), never by string formatting."""
    return _kept_cursor(raw, "_elsa_client_cursor", psycopg.ClientCursor)


def _kept_cursor(raw: Any, attribute: str, cursor_class: type) -> Any:
    cursor = getattr(raw, attribute, None)
    if cursor is None or cursor.closed:
        cursor = cursor_class(raw)
        setattr(raw, attribute, cursor)
    return cursor
