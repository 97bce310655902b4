"""Reads of the bookmarks app: an instance's bookmarks, and the live bookmark a token names."""

import datetime as dt
import functools
import uuid
from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import QuerySet
from django.utils import timezone

from bookmarks.models import Bookmark, BookmarkStatus, ResumeToken
from bookmarks.tokens import ResumeTokenPayload
from elsa_site.db import execute_bound
from elsa_site.errors import DomainError, NotFound, TooManyRequests
from workflows.models import InstanceStatus, WorkflowDefinition, WorkflowInstance


class SoftBlocked(TooManyRequests):
    code = "soft_blocked"


def refused(exc: DomainError, reason: str) -> DomainError:
    """Tag a refusal with the precise reason for the audit log (the response keeps the generic one)."""
    exc.reason = reason
    return exc


def gone(reason: str) -> DomainError:
    # One public answer for every dead link; the precise reason goes to the audit log only.
    return refused(NotFound("This resume link is no longer valid.", code="bookmark_gone"), reason)


def instance_bookmarks(*, instance: WorkflowInstance) -> QuerySet[Bookmark]:
    return Bookmark.objects.filter(instance=instance).prefetch_related("tokens").order_by("created_at")


def bookmark_check_live(bookmark: Bookmark, payload: ResumeTokenPayload, instance: WorkflowInstance) -> None:
    """Raise 404 unless the bookmark still waits: active, unexpired, its instance neither stopped nor another."""
    if str(bookmark.instance_id) != payload.instance_id or str(instance.pk) != payload.instance_id:
        # Cannot happen without our key; refuse rather than resume some other instance.
        raise gone("instance_mismatch")
    if bookmark.status != BookmarkStatus.ACTIVE:
        raise gone(f"bookmark_{bookmark.status}")
    if bookmark.expires_at <= timezone.now():
        raise gone("bookmark_expired")
    if instance.status not in (InstanceStatus.SUSPENDED, InstanceStatus.RUNNING):
        raise gone(f"instance_{instance.status.lower()}")


@dataclass(frozen=True)
class _TokenLookup:
    sql: str
    bookmark_attnames: list[str]
    instance_attnames: list[str]
    # One list of (converter, expression) per selected column, as Django's compiler applies them.
    converters: list[list[tuple]]


# The instance columns the checks and a fenced resume read: never variables, outputs or secrets.
_INSTANCE_FIELDS = ("id", "definition", "definition_version", "status", "state", "revision")


@functools.cache
def _token_lookup(alias: str, lock: bool) -> _TokenLookup:
    """The token -> bookmark -> instance join as SQL, built once from the models' metadata.

    Every resume runs it: compiling the equivalent select_related/only queryset cost about 1 ms of
    CPU per request, more than the query itself, for SQL that never changes.
    """
    conn = connections[alias]
    qn = conn.ops.quote_name
    token_bookmark = ResumeToken._meta.get_field("bookmark")
    instance_fields = [f for f in WorkflowInstance._meta.concrete_fields if f.name in _INSTANCE_FIELDS]
    bookmark_fields = list(Bookmark._meta.concrete_fields)
    columns = [
        ("t", token_bookmark),
        ("t", ResumeToken._meta.get_field("revoked_at")),
        *(("b", f) for f in bookmark_fields),
        *(("i", f) for f in instance_fields),
    ]
    bookmark_instance = Bookmark._meta.get_field("instance")
    # Only quoted identifiers from the models' metadata are formatted in; the token id is bound.
    select = ", ".join(f"{table}.{qn(f.column)}" for table, f in columns)
    sql = (
        f"SELECT {select}"  # noqa: S608
        f" FROM {qn(ResumeToken._meta.db_table)} t"
        f" INNER JOIN {qn(Bookmark._meta.db_table)} b"
        f" ON b.{qn(Bookmark._meta.pk.column)} = t.{qn(token_bookmark.column)}"
        f" INNER JOIN {qn(WorkflowInstance._meta.db_table)} i"
        f" ON i.{qn(WorkflowInstance._meta.pk.column)} = b.{qn(bookmark_instance.column)}"
        f" WHERE t.{qn(ResumeToken._meta.pk.column)} = %s"
    )
    if lock and conn.features.has_select_for_update:
        # Only the bookmark row: the instance row is the engine's per-step lock (see below).
        sql += " FOR UPDATE OF b" if conn.features.has_select_for_update_of else " FOR UPDATE"
    return _TokenLookup(
        sql=sql,
        bookmark_attnames=[f.attname for f in bookmark_fields],
        instance_attnames=[f.attname for f in instance_fields],
        converters=column_converters(conn, columns),
    )


def column_converters(conn, columns) -> list[list[tuple]]:
    """For each selected (table alias, field), the (converter, expression) pairs Django's compiler applies."""
    converters = []
    for table, field in columns:
        expression = field.get_col(table)
        found = conn.ops.get_db_converters(expression) + expression.get_db_converters(conn)
        converters.append([(converter, expression) for converter in found])
    return converters


def converted_row(conn, row, converters: list[list[tuple]]) -> list:
    """A fetched row's values as the ORM would load them (JSON decoded, datetimes aware, ...)."""
    values = []
    for value, pairs in zip(row, converters, strict=True):
        for converter, expression in pairs:
            value = converter(value, expression, conn)
        values.append(value)
    return values


def _token_row(token_id: str, *, lock: bool) -> tuple[str, object, Bookmark] | None:
    """(bookmark id of the token, its revoked_at, its bookmark with the instance's run state) or None."""
    conn = connections[DEFAULT_DB_ALIAS]
    lookup = _token_lookup(conn.alias, lock)
    param = ResumeToken._meta.pk.get_db_prep_value(uuid.UUID(token_id), conn)
    if conn.vendor == "postgresql":
        # A prepared statement: parsed and planned once per connection rather than per resume.
        _, row = execute_bound(lookup.sql, [param], prepare=True, using=conn.alias)
    else:
        with conn.cursor() as cursor:
            cursor.execute(lookup.sql, [param])
            row = cursor.fetchone()
    if row is None:
        return None
    values = converted_row(conn, row, lookup.converters)
    split = 2 + len(lookup.bookmark_attnames)
    bookmark = Bookmark.from_db(conn.alias, lookup.bookmark_attnames, values[2:split])
    instance = WorkflowInstance.from_db(conn.alias, lookup.instance_attnames, values[split:])
    Bookmark.instance.field.set_cached_value(bookmark, instance)
    return str(values[0]), values[1], bookmark


def bookmark_for_token(payload: ResumeTokenPayload, *, lock: bool = False) -> Bookmark:
    """The live bookmark an authentic, unexpired token names, checked in the contract's order.

    Token id denylist (404) -> bookmark live (404) -> soft block (429). One query fetches the token
    row, its bookmark and the instance's status and run state. With lock=True (the resume, inside
    its transaction) the bookmark row is locked FOR UPDATE, and only that row: the instance row is
    the engine's per-step lock, which a refused attempt must never hold. Without it (the approval
    page) this only reads and never consumes anything.
    """
    found = _token_row(payload.token_id, lock=lock)
    if found is None or found[0] != payload.bookmark_id:
        raise gone("token_unknown")
    _bookmark_id, revoked_at, bookmark = found
    if revoked_at is not None:
        raise gone("token_revoked")
    # Liveness before the soft block: a bookmark that is revoked, consumed, expired or whose
    # instance stopped is gone (404), whether or not it was blocked before that.
    bookmark_check_live(bookmark, payload, bookmark.instance)
    if bookmark.soft_blocked:
        raise refused(
            SoftBlocked("This resume link is blocked after repeated failures; ask an operator to clear it."),
            "soft_blocked",
        )
    return bookmark


def bookmark_approval_summary(bookmark: Bookmark, payload: ResumeTokenPayload) -> dict:
    """What the approval page may show: workflow name, activity, expiry (no variables, input or outputs).

    The expiry is the link's: its token's, when that comes before the bookmark's own.
    """
    definition = WorkflowDefinition.objects.only("name").get(pk=bookmark.instance.definition_id)
    token_expires_at = dt.datetime.fromtimestamp(payload.expires_at, tz=dt.UTC)
    expires_at = min(bookmark.expires_at, token_expires_at)
    return {"workflow_name": definition.name, "activity_id": bookmark.activity_id, "expires_at": expires_at}
