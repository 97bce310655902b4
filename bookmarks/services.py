"""Writes of the bookmarks app: create, issue tokens, resume, revoke, soft-block, expire, invalidate."""

import datetime as dt
import functools
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone

from audit.actors import Actor
from audit.services import audit_pending_execute, audit_pending_insert, audit_record
from bookmarks.models import Bookmark, BookmarkStatus, OnExpiry, ResumeToken
from bookmarks.resume_input import InputRejected, input_validate
from bookmarks.selectors import (
    bookmark_check_live,
    bookmark_for_token,
    column_converters,
    converted_row,
    gone,
    refused,
)
from bookmarks.tokens import (
    ResumeTokenPayload,
    TokenExpired,
    TokenMalformed,
    approve_url,
    resume_token_decode,
    resume_token_encode,
    resume_token_fingerprint,
    resume_url,
)
from elsa_site.errors import Conflict, DomainError, InvalidInput
from workflows.models import WorkflowInstance
from workflows.runtime import Fence, fault_locked
from workflows.services import workflow_instance_resume, workflow_instance_resume_fenced

RESOURCE = "bookmark"
USER_AGENT_MAX = 256
# Set while bookmark_resume drives the engine: the engine's instance_resumed hook then has nothing
# to burn (this resume burned its bookmark already) and skips the lookup.
_resuming_bookmark: ContextVar[str | None] = ContextVar("bookmarks_resuming", default=None)


# Lock order. A resume, an expiry or a token issue locks the bookmark row first and the instance row
# only when it really changes the instance (a fenced resume's one statement does the same: its
# `live` CTE locks the bookmark before its UPDATE of the instance). The engine's side (cancel,
# finish, fault, resume hooks) holds the instance and takes bookmark locks with SKIP LOCKED, so
# the two orders can never deadlock.
# The instance row is also the engine's per-step lock, taken by run tasks with SKIP LOCKED: a
# refused attempt must not hold it, or a continuation arriving at that moment would be skipped.


def _waiting_instance(bookmark: Bookmark) -> WorkflowInstance | None:
    """The bookmark's instance, locked, if it is live and waits at the bookmark's activity; else None.

    Checked first without a lock, so a refusal never holds the engine's per-step lock.
    """
    peek = WorkflowInstance.objects.filter(pk=bookmark.instance_id).only("status", "state").first()
    if peek is None or not peek.is_live or bookmark.activity_id not in (peek.state or {}).get("waiting", {}):
        return None
    instance = WorkflowInstance.objects.select_for_update().filter(pk=bookmark.instance_id).first()
    if instance is None or not instance.is_live or bookmark.activity_id not in instance.state.get("waiting", {}):
        return None
    return instance


def _audit(event: str, action: str, bookmark: Bookmark, *, actor: Actor, result="success", **context) -> None:
    audit_record(
        event_type=f"bookmark.{event}",
        action=action,
        result=result,
        resource=(RESOURCE, str(bookmark.pk)),
        actor=actor,
        context={"instance_id": str(bookmark.instance_id), "activity_id": bookmark.activity_id, **context},
    )


# --- Creation and tokens ------------------------------------------------------------------------


def bookmark_lifetime(*, ttl_seconds: int | None = None, expires_at: dt.datetime | None = None) -> dt.datetime:
    """The expiry for a ttl or an absolute time (default ELSA_BOOKMARK_DEFAULT_TTL_SECONDS), within the max."""
    now = timezone.now()
    longest = now + dt.timedelta(seconds=settings.ELSA_BOOKMARK_MAX_TTL_SECONDS)
    if expires_at is not None and ttl_seconds is not None:
        raise InvalidInput("Give ttl_seconds or expires_at, not both.")
    if expires_at is None:
        ttl = settings.ELSA_BOOKMARK_DEFAULT_TTL_SECONDS if ttl_seconds is None else ttl_seconds
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0:
            raise InvalidInput("ttl_seconds must be a positive integer.")
        if ttl > settings.ELSA_BOOKMARK_MAX_TTL_SECONDS:
            # Before the timedelta: a huge ttl would overflow it (a 500) instead of being refused.
            raise InvalidInput(f"A bookmark lives at most {settings.ELSA_BOOKMARK_MAX_TTL_SECONDS} seconds.")
        expires_at = now + dt.timedelta(seconds=ttl)
    if timezone.is_naive(expires_at):
        raise InvalidInput("expires_at must include a time zone.")
    if expires_at <= now:
        raise InvalidInput("expires_at must be in the future.")
    if expires_at > longest:
        raise InvalidInput(f"A bookmark lives at most {settings.ELSA_BOOKMARK_MAX_TTL_SECONDS} seconds.")
    return expires_at


@transaction.atomic
def bookmark_create(
    *,
    instance: WorkflowInstance,
    activity_id: str,
    expires_at: dt.datetime,
    auto_burn: bool = True,
    input_schema: dict | None = None,
    on_expiry: str = OnExpiry.FAULT,
    actor: Actor,
) -> Bookmark:
    """Record that `instance` waits at `activity_id` for an outside resume until `expires_at`."""
    bookmark = Bookmark.objects.create(
        instance=instance,
        activity_id=activity_id,
        expires_at=expires_at,
        auto_burn=auto_burn,
        input_schema=input_schema or None,
        on_expiry=on_expiry,
    )
    _audit("created", "create", bookmark, actor=actor, expires_at=expires_at.isoformat(), auto_burn=auto_burn)
    return bookmark


@dataclass(frozen=True)
class IssuedToken:
    """A freshly minted token: the only moment the token exists outside its holder."""

    token: str
    record: ResumeToken

    @property
    def url(self) -> str:
        return resume_url(self.token)

    @property
    def approve_url(self) -> str:
        return approve_url(self.token)

    @property
    def expires_at(self) -> dt.datetime:
        return self.record.expires_at


@transaction.atomic
def resume_token_issue(
    *,
    bookmark: Bookmark,
    actor: Actor,
    ttl_seconds: int | None = None,
    expires_at: dt.datetime | None = None,
) -> IssuedToken:
    """Mint a resume token for an active bookmark; it never outlives the bookmark.

    Without ttl_seconds or expires_at the token lives as long as the bookmark. Only the token id and
    the token's SHA-256 fingerprint are stored: a database reader cannot resume anything.
    """
    bookmark = Bookmark.objects.select_for_update().get(pk=bookmark.pk)
    if not bookmark.is_active:
        raise Conflict(f"The bookmark is {bookmark.status}; no token can be issued.", code="bookmark_not_active")
    if ttl_seconds is None and expires_at is None:
        token_expiry = bookmark.expires_at
    else:
        token_expiry = min(bookmark_lifetime(ttl_seconds=ttl_seconds, expires_at=expires_at), bookmark.expires_at)
    # Whole seconds: the payload carries epoch seconds, so the stored expiry matches the token's.
    token_expiry = token_expiry.replace(microsecond=0)
    if token_expiry <= timezone.now():
        raise Conflict("The bookmark expires too soon to issue a token.", code="bookmark_not_active")
    token_id = uuid.uuid4()
    token = resume_token_encode(
        ResumeTokenPayload(
            bookmark_id=str(bookmark.pk),
            instance_id=str(bookmark.instance_id),
            token_id=str(token_id),
            expires_at=int(token_expiry.timestamp()),
        )
    )
    fingerprint = resume_token_fingerprint(token)
    record = ResumeToken.objects.create(
        id=token_id, bookmark=bookmark, fingerprint=fingerprint, expires_at=token_expiry
    )
    _audit(
        "token_issued",
        "issue",
        bookmark,
        actor=actor,
        token_id=str(token_id),
        token_fingerprint=fingerprint,
        expires_at=token_expiry.isoformat(),
    )
    return IssuedToken(token=token, record=record)


# --- Revocation, soft block, invalidation, expiry ------------------------------------------------


@transaction.atomic
def bookmark_revoke(*, bookmark: Bookmark, actor: Actor) -> Bookmark:
    """Revoke a bookmark: every token of it answers 404 from now on."""
    bookmark = Bookmark.objects.select_for_update().get(pk=bookmark.pk)
    if bookmark.status == BookmarkStatus.REVOKED:
        return bookmark
    bookmark.transition(BookmarkStatus.REVOKED)
    bookmark.save(update_fields=["status", "revoked_at"])
    _audit("revoked", "revoke", bookmark, actor=actor)
    return bookmark


@transaction.atomic
def resume_token_revoke(*, token: ResumeToken, actor: Actor) -> ResumeToken:
    """Deny one token id until it expires; the bookmark and its other tokens stay usable."""
    token = ResumeToken.objects.select_for_update().select_related("bookmark").get(pk=token.pk)
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        _audit(
            "token_revoked",
            "revoke",
            token.bookmark,
            actor=actor,
            token_id=str(token.pk),
            token_fingerprint=token.fingerprint,
        )
    return token


@transaction.atomic
def bookmark_clear_soft_block(*, bookmark: Bookmark, actor: Actor) -> Bookmark:
    """Lift a soft block and reset the failure count (an operator's decision, audited)."""
    bookmark = Bookmark.objects.select_for_update().get(pk=bookmark.pk)
    if bookmark.soft_blocked_at is None and bookmark.failure_count == 0:
        return bookmark
    bookmark.soft_blocked_at = None
    bookmark.failure_count = 0
    bookmark.save(update_fields=["soft_blocked_at", "failure_count"])
    _audit("soft_block_cleared", "clear", bookmark, actor=actor)
    return bookmark


@transaction.atomic
def bookmark_record_failure(*, bookmark_id, reason: str, token_fingerprint: str, actor: Actor) -> Bookmark | None:
    """Count a failed attempt (bad input or schema); soft-block the bookmark at ELSA_RESUME_MAX_FAILURES."""
    # The row lock makes concurrent failures count exactly, so the block lands on the Nth one.
    bookmark = Bookmark.objects.select_for_update().filter(pk=bookmark_id).first()
    if bookmark is None:
        return None
    bookmark.failure_count += 1
    blocks_now = bookmark.soft_blocked_at is None and bookmark.failure_count >= settings.ELSA_RESUME_MAX_FAILURES
    if blocks_now:
        bookmark.soft_blocked_at = timezone.now()
    bookmark.save(update_fields=["failure_count", "soft_blocked_at"])
    if blocks_now:
        _audit(
            "soft_blocked",
            "block",
            bookmark,
            actor=actor,
            reason=reason,
            failure_count=bookmark.failure_count,
            token_fingerprint=token_fingerprint,
        )
    return bookmark


def bookmarks_invalidate(*, instance: WorkflowInstance, reason: str, actor: Actor) -> int:
    """Invalidate every active bookmark of an instance that stopped (cancelled, finished, faulted)."""
    # No savepoint: the listeners call this inside the engine's transaction, where a failure must
    # roll back the engine's change too (fail closed), so a savepoint would only cost two round
    # trips on every finished instance. Called on its own, this opens a transaction.
    with transaction.atomic(savepoint=False):
        return _invalidate(instance=instance, reason=reason, actor=actor)


# One statement on PostgreSQL: lock (SKIP LOCKED) and invalidate the instance's active bookmarks.
# Every finished instance comes here, almost all with no active bookmark: then the partial scan of
# the instance's index finds nothing, and nothing is locked or written. The state machine allows
# active -> invalidated, and only active rows match. Table and column names are the model's own.
_PG_INVALIDATE = (
    f"UPDATE {Bookmark._meta.db_table} SET status = %s, invalidated_at = %s "  # noqa: S608
    f"WHERE id IN (SELECT id FROM {Bookmark._meta.db_table} WHERE instance_id = %s AND status = %s "
    "FOR UPDATE SKIP LOCKED) RETURNING id, activity_id, created_at"
)


def _invalidate(*, instance: WorkflowInstance, reason: str, actor: Actor) -> int:
    # SKIP LOCKED: a bookmark locked right now is being resumed; that resume then finds the instance
    # stopped (it waits for this transaction) and invalidates the bookmark itself.
    conn = connections[instance._state.db or DEFAULT_DB_ALIAS]
    if conn.vendor != "postgresql":
        return _invalidate_portable(instance=instance, reason=reason, actor=actor)
    now = timezone.now()
    with conn.cursor() as cursor:
        cursor.execute(
            _PG_INVALIDATE,
            [str(BookmarkStatus.INVALIDATED), now, instance.pk, str(BookmarkStatus.ACTIVE)],
        )
        rows = cursor.fetchall()
    # Audited newest first, the order the bookmarks are listed in (Meta.ordering).
    for pk, activity_id, _created in sorted(rows, key=lambda row: row[2], reverse=True):
        bookmark = Bookmark(id=pk, instance_id=instance.pk, activity_id=activity_id, status=BookmarkStatus.INVALIDATED)
        bookmark.invalidated_at = now
        _audit("invalidated", "invalidate", bookmark, actor=actor, reason=reason)
    return len(rows)


def _invalidate_portable(*, instance: WorkflowInstance, reason: str, actor: Actor) -> int:
    count = 0
    locked = list(
        Bookmark.objects.select_for_update(skip_locked=True)
        .filter(instance=instance, status=BookmarkStatus.ACTIVE)
        .values_list("pk", flat=True)
    )
    if not locked:
        return 0
    for bookmark in Bookmark.objects.filter(pk__in=locked):  # locked above by this transaction
        bookmark.transition(BookmarkStatus.INVALIDATED)
        bookmark.save(update_fields=["status", "invalidated_at"])
        _audit("invalidated", "invalidate", bookmark, actor=actor, reason=reason)
        count += 1
    return count


def may_consume_resumed(instance: WorkflowInstance) -> bool:
    """Whether bookmarks_consume_resumed may write for a resume of `instance` now: not while a
    bookmark resume drives the engine (that resume burns its own bookmark)."""
    return _resuming_bookmark.get() is None


def bookmarks_consume_resumed(*, instance: WorkflowInstance, activity_id: str, actor: Actor) -> int:
    """Burn auto-burn bookmarks of an activity the engine resumed some other way (nothing waits there now)."""
    if not may_consume_resumed(instance):
        return 0
    return _consume_resumed(instance=instance, activity_id=activity_id, actor=actor)


@transaction.atomic
def _consume_resumed(*, instance: WorkflowInstance, activity_id: str, actor: Actor) -> int:
    count = 0
    for bookmark in Bookmark.objects.select_for_update(skip_locked=True).filter(
        instance=instance, activity_id=activity_id, status=BookmarkStatus.ACTIVE, auto_burn=True
    ):
        bookmark.transition(BookmarkStatus.CONSUMED)
        bookmark.save(update_fields=["status", "consumed_at"])
        _audit("consumed", "consume", bookmark, actor=actor, reason="activity_resumed")
        count += 1
    return count


@transaction.atomic
def bookmark_expire(*, bookmark_id, actor: Actor) -> Bookmark | None:
    """Mark a due bookmark expired and apply its on_expiry policy (fault, or resume with Timeout).

    Idempotent: a bookmark that is no longer active, or not yet due, is left alone.
    """
    bookmark = Bookmark.objects.select_for_update().filter(pk=bookmark_id).first()
    if bookmark is None or not bookmark.is_active or bookmark.expires_at > timezone.now():
        return None
    bookmark.transition(BookmarkStatus.EXPIRED)
    bookmark.save(update_fields=["status", "expired_at"])
    instance = _waiting_instance(bookmark)
    applied = "none"  # nothing waits there any more: only the bookmark expires
    if instance is not None and bookmark.on_expiry == OnExpiry.TIMEOUT:
        workflow_instance_resume(
            instance=instance,
            activity_id=bookmark.activity_id,
            outcome="Timeout",
            output=None,
            actor=actor,
            locked=True,  # _waiting_instance read it under the row lock, in this transaction
        )
        applied = "timeout"
    elif instance is not None:
        # The engine offers no public fault service; fault_locked is its own primitive for a locked
        # instance ("resume" in the token completes the Suspended execution record as Faulted).
        fault_locked(
            instance,
            activity_id=bookmark.activity_id,
            message=f"activity '{bookmark.activity_id}' (WaitForResume): the bookmark expired before it was resumed",
            now=timezone.now(),
            token={"a": bookmark.activity_id, "resume": {}},
            activity_type="WaitForResume",
            actor=actor,
        )
        applied = "fault"
    # Last in the transaction: the audit chain lock is held from the append until the commit.
    _audit("expired", "expire", bookmark, actor=actor, on_expiry=bookmark.on_expiry, applied=applied)
    return bookmark


# --- Resume -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResumeAttempt:
    """One resume request, as the resume service sees it (no HTTP objects beyond `read_input`)."""

    token: str | None
    client_ip: str | None
    user_agent: str
    channel: str  # "api" or "approval-page"
    # Reads and parses the input; raises InputRejected (413, 415, 400). Called only after every
    # token and bookmark check passed, so an unauthenticated caller never gets the body parsed.
    read_input: Callable[[], dict]
    # Buffers the raw body (no parsing, no status) once the token is authentic; None when no body.
    preload: Callable[[], None] | None = None


@dataclass(frozen=True)
class ResumeResult:
    bookmark: Bookmark
    instance: WorkflowInstance


def _attempt_context(attempt: ResumeAttempt, fingerprint: str | None, payload: ResumeTokenPayload | None) -> dict:
    context = {
        "token_fingerprint": fingerprint,
        "user_agent": (attempt.user_agent or "")[:USER_AGENT_MAX],
        "channel": attempt.channel,
    }
    if payload is not None:
        context.update(
            {"bookmark_id": payload.bookmark_id, "instance_id": payload.instance_id, "token_id": payload.token_id}
        )
    return context


@transaction.atomic
def resume_attempt_audit_failure(
    *, attempt: ResumeAttempt, reason: str, status: int, payload: ResumeTokenPayload | None = None
) -> None:
    """Audit a refused resume attempt in its own transaction (it must outlive the refused request)."""
    fingerprint = resume_token_fingerprint(attempt.token) if attempt.token else None
    audit_record(
        event_type="bookmark.resume",
        action="resume",
        result="failure",
        resource=(RESOURCE, payload.bookmark_id) if payload is not None else None,
        actor=Actor.anonymous(attempt.client_ip),
        context={**_attempt_context(attempt, fingerprint, payload), "reason": reason, "status": status},
    )


def bookmark_resume(*, attempt: ResumeAttempt) -> ResumeResult:
    """Resume the bookmark a token names, after every check of the contract, in the contract's order.

    Token (400 malformed or foreign, 401 expired) -> token id denylist (404) -> bookmark live (404)
    -> soft block (429) -> input (415, 413, 400). Every attempt is audited, successes with the
    resume's own write, refusals in a transaction of their own.
    """
    payload: ResumeTokenPayload | None = None
    fingerprint = resume_token_fingerprint(attempt.token) if attempt.token else None
    try:
        try:
            payload = resume_token_decode(attempt.token)
        except TokenExpired as exc:
            payload = getattr(exc, "payload", None)
            raise refused(exc, "token_expired") from None
        except TokenMalformed as exc:
            raise refused(exc, "token_missing" if not attempt.token else "token_malformed") from None
        if attempt.preload is not None:
            # Buffer the body (at most 1 MiB; a larger one is not read) before any row is locked, so
            # a slow client never holds the bookmark lock. Parsing it is a later check.
            attempt.preload()
        try:
            resumed = _resume_fenced(payload=payload, attempt=attempt, fp=fingerprint)
            if resumed is None:
                # SQLite, a listener that writes with the resume, or a race lost to another change:
                # the same checks again, from a fresh read, in a transaction holding the row locks.
                resumed = _resume_locked(payload=payload, attempt=attempt, fp=fingerprint)
            return resumed
        except InputRejected as exc:
            # Counted in a transaction of its own: the resume's transaction rolled back.
            bookmark_record_failure(
                bookmark_id=payload.bookmark_id,
                reason=exc.reason,
                token_fingerprint=fingerprint,
                actor=Actor.anonymous(attempt.client_ip),
            )
            raise refused(exc, exc.reason) from None
        except DomainError as exc:
            if str(getattr(exc, "reason", "")).startswith("instance_") and exc.reason != "instance_mismatch":
                # The instance stopped while this resume waited for it: the engine's invalidation
                # skipped this (then locked) bookmark, so finish its job now.
                stopped = WorkflowInstance.objects.filter(pk=payload.instance_id).first()
                if stopped is not None and not stopped.is_live:
                    bookmarks_invalidate(instance=stopped, reason=exc.reason, actor=Actor.system("bookmarks"))
            raise
    except DomainError as exc:
        resume_attempt_audit_failure(
            attempt=attempt, reason=getattr(exc, "reason", exc.code), status=exc.http_status, payload=payload
        )
        raise


@dataclass(frozen=True)
class _BurnStatement:
    sql: str
    written: list  # the bookmark fields set, in the order of their parameters
    instance_attnames: list[str]
    converters: list[list[tuple]]


@functools.cache
def _burn_statement(alias: str, fields: tuple[str, ...], audit_insert: str) -> _BurnStatement:
    """`UPDATE bookmark SET fields`, the resume's audit event and `SELECT instance FOR UPDATE` as
    one statement, built once per shape.

    Every resume runs it: one round trip instead of three, and none of the ORM's save() and
    select_for_update() compilation, which cost more CPU than the statements themselves.
    """
    conn = connections[alias]
    qn = conn.ops.quote_name
    bookmark_meta, instance_meta = Bookmark._meta, WorkflowInstance._meta
    written = [bookmark_meta.get_field(name) for name in fields]
    instance_fields = list(instance_meta.concrete_fields)
    assignments = ", ".join(f"{qn(field.column)} = %s" for field in written)
    select = ", ".join(f"i.{qn(field.column)}" for field in instance_fields)
    # Only quoted identifiers from the models' metadata and the audit app's fixed INSERT (values
    # bound) are formatted in; every value is bound. A data-modifying WITH runs exactly once
    # whether or not the SELECT reads it. The SELECT locks the instance row like
    # select_for_update(): it waits for a concurrent cancel or step, then reads the row as that
    # transaction left it.
    sql = (
        f"WITH burn AS (UPDATE {qn(bookmark_meta.db_table)} SET {assignments}"  # noqa: S608
        f" WHERE {qn(bookmark_meta.pk.column)} = %s), recorded AS ({audit_insert})"
        f" SELECT {select} FROM {qn(instance_meta.db_table)} i"
        f" WHERE i.{qn(instance_meta.pk.column)} = %s FOR UPDATE"
    )
    return _BurnStatement(
        sql=sql,
        written=written,
        instance_attnames=[field.attname for field in instance_fields],
        converters=column_converters(conn, [("i", field) for field in instance_fields]),
    )


def _burn_and_lock_instance(bookmark: Bookmark, fields: list[str], event: dict) -> WorkflowInstance | None:
    """Write `fields` of the (locked) bookmark, record `event` (audit_record's keyword arguments),
    then lock and read its instance; None if it is gone.

    The bookmark row is locked first (bookmark_for_token), the instance row second: the lock order
    described at the top of this module.
    """
    conn = connections[bookmark._state.db or DEFAULT_DB_ALIAS]
    if conn.vendor != "postgresql":
        Bookmark.objects.filter(pk=bookmark.pk).update(**{name: getattr(bookmark, name) for name in fields})
        audit_record(**event)
        return WorkflowInstance.objects.select_for_update().filter(pk=bookmark.instance_id).first()
    audit_insert, audit_params = audit_pending_insert([event])
    statement = _burn_statement(conn.alias, tuple(fields), audit_insert)
    params = [field.get_db_prep_save(getattr(bookmark, field.attname), conn) for field in statement.written]
    params.append(Bookmark._meta.pk.get_db_prep_value(bookmark.pk, conn))
    params += audit_params
    params.append(WorkflowInstance._meta.pk.get_db_prep_value(bookmark.instance_id, conn))
    # A prepared statement (server-side binding): parsed and planned once per connection. Run as
    # the audit app runs its inserts: a failure dooms the resume's transaction (fail closed).
    _, row = audit_pending_execute(statement.sql, params)
    if row is None:
        return None
    values = converted_row(conn, row, statement.converters)
    return WorkflowInstance.from_db(conn.alias, statement.instance_attnames, values)


def _checked_input(bookmark: Bookmark, instance: WorkflowInstance, attempt: ResumeAttempt) -> dict:
    """The attempt's input, read and validated against the bookmark's schema (InputRejected); then
    409 unless the instance (as read) waits at the bookmark's activity."""
    data = attempt.read_input()
    input_validate(bookmark.input_schema, data)
    if bookmark.activity_id not in (instance.state or {}).get("waiting", {}):
        # A non-burning bookmark whose workflow has not come back to wait here yet.
        raise Conflict("The workflow is not waiting at this step right now; retry later.", code="not_waiting")
    return data


def _resume_change(bookmark: Bookmark, now: dt.datetime) -> list[str]:
    """Count a resume of the bookmark in memory (and burn it if auto-burn); returns the fields written."""
    fields = ["resume_count", "last_resumed_at"]
    if bookmark.auto_burn:
        bookmark.transition(BookmarkStatus.CONSUMED, at=now)
        fields += ["status", "consumed_at"]
    bookmark.resume_count += 1
    bookmark.last_resumed_at = now
    return fields


def _resume_event(bookmark: Bookmark, attempt: ResumeAttempt, fp: str | None, payload: ResumeTokenPayload) -> dict:
    """The audit event of a successful resume (audit_record's keyword arguments)."""
    return {
        "event_type": "bookmark.resume",
        "action": "resume",
        "result": "success",
        "resource": (RESOURCE, str(bookmark.pk)),
        "actor": Actor.anonymous(attempt.client_ip),
        "context": {**_attempt_context(attempt, fp, payload), "reason": "resumed", "auto_burn": bookmark.auto_burn},
    }


@functools.cache
def _fence_statement(alias: str, fields: tuple[str, ...]) -> tuple[str, str, list]:
    """(before, after, fields written) of a fenced resume's runtime.Fence, built once per shape.

    `live` locks the bookmark row (before the instance row, the lock order described at the top of
    this module) if it is still what the lookup found it: active, not soft-blocked, unexpired, and
    its token not revoked. `burn` writes the resume's fields only with the instance's change.
    Only quoted identifiers from the models' metadata are formatted in; every value is bound.
    """
    qn = connections[alias].ops.quote_name
    bookmark_meta, token_meta = Bookmark._meta, ResumeToken._meta
    table, pk = qn(bookmark_meta.db_table), qn(bookmark_meta.pk.column)

    def column(name: str) -> str:
        return qn(bookmark_meta.get_field(name).column)

    written = [bookmark_meta.get_field(name) for name in fields]
    before = (
        f"live AS (SELECT b.{pk} FROM {table} b WHERE b.{pk} = %s AND b.{column('status')} = %s"  # noqa: S608
        f" AND b.{column('soft_blocked_at')} IS NULL AND b.{column('expires_at')} > %s"
        f" AND NOT EXISTS (SELECT FROM {qn(token_meta.db_table)} t WHERE t.{qn(token_meta.pk.column)} = %s"
        f" AND t.{qn(token_meta.get_field('revoked_at').column)} IS NOT NULL) FOR UPDATE)"
    )
    assignments = ", ".join(f"{qn(field.column)} = %s" for field in written)
    after = f"burn AS (UPDATE {table} SET {assignments} WHERE {pk} = %s AND EXISTS (SELECT FROM upd))"  # noqa: S608
    return before, after, written


def _resume_fenced(*, payload: ResumeTokenPayload, attempt: ResumeAttempt, fp: str | None) -> ResumeResult | None:
    """The resume without a transaction (PostgreSQL): read, check, then one fenced statement.

    The lookup takes no lock; the statement locks the bookmark if it is still live, saves the
    instance's change if its revision is still the one read, burns the bookmark and records both
    audit events, or does none of it. Two round trips where _resume_locked takes five. Of N
    concurrent resumes of one bookmark, the first statement burns it; every other one finds it
    consumed (after waiting for that lock) and writes nothing, then _resume_locked refuses it.
    None when nothing was written: the caller falls back to _resume_locked.
    """
    conn = connections[DEFAULT_DB_ALIAS]
    if conn.vendor != "postgresql" or conn.in_atomic_block:
        return None
    bookmark = bookmark_for_token(payload)
    instance = bookmark.instance
    data = _checked_input(bookmark, instance, attempt)
    now = timezone.now()
    fields = _resume_change(bookmark, now)
    before, after, written = _fence_statement(conn.alias, tuple(fields))
    fence = Fence(
        check="live",
        before=before,
        before_params=[bookmark.pk, str(BookmarkStatus.ACTIVE), now, uuid.UUID(payload.token_id)],
        after=after,
        after_params=[
            *(field.get_db_prep_save(getattr(bookmark, field.attname), conn) for field in written),
            bookmark.pk,
        ],
        events=[_resume_event(bookmark, attempt, fp, payload)],
    )
    resuming = _resuming_bookmark.set(str(bookmark.pk))
    try:
        resumed = workflow_instance_resume_fenced(
            instance=instance,
            activity_id=bookmark.activity_id,
            outcome="Done",
            output=data,
            actor=Actor.anonymous(attempt.client_ip),
            fence=fence,
        )
    finally:
        _resuming_bookmark.reset(resuming)
    return None if resumed is None else ResumeResult(bookmark=bookmark, instance=resumed)


@transaction.atomic
def _resume_locked(*, payload: ResumeTokenPayload, attempt: ResumeAttempt, fp: str | None) -> ResumeResult:
    # The bookmark row lock is what makes a bookmark single-use: of N concurrent resumes, each waits
    # here in turn, and every one after the first sees the bookmark consumed and leaves without ever
    # touching the instance row.
    bookmark = bookmark_for_token(payload, lock=True)
    peek = bookmark.instance
    if not bookmark.auto_burn:
        # Several resumes of a non-burning bookmark pass the lock in turn: re-read the run state in a
        # fresh snapshot, the joined one may predate the previous resume.
        peek = WorkflowInstance.objects.filter(pk=bookmark.instance_id).only("id", "status", "state").first()
        if peek is None:
            raise gone("bookmark_missing")
        bookmark_check_live(bookmark, payload, peek)
    data = _checked_input(bookmark, peek, attempt)
    fields = _resume_change(bookmark, timezone.now())
    actor = Actor.anonymous(attempt.client_ip)
    # Recorded with the burn: the transaction commits it only if the engine's resume below succeeds.
    event = _resume_event(bookmark, attempt, fp, payload)
    # Every check passed: only now is the instance row (the engine's per-step lock) taken.
    instance = _burn_and_lock_instance(bookmark, fields, event)
    if instance is None:
        raise gone("bookmark_missing")
    # The engine stores `data` in outputs.<activity id> and enqueues the continuation on commit,
    # so the burn, its audit event and the resume commit (or roll back) together.
    resuming = _resuming_bookmark.set(str(bookmark.pk))
    try:
        # locked=True: the engine re-checks the instance read under the lock above, without reading
        # it again or taking a savepoint; any refusal rolls back this whole transaction.
        instance = workflow_instance_resume(
            instance=instance, activity_id=bookmark.activity_id, outcome="Done", output=data, actor=actor, locked=True
        )
    except Conflict:
        if not instance.is_live:
            raise gone(f"instance_{instance.status.lower()}") from None
        raise
    finally:
        _resuming_bookmark.reset(resuming)
    return ResumeResult(bookmark=bookmark, instance=instance)
