"""The runtime: runs an instance's pending activities, persisting the run state after every activity."""

import datetime as dt
import functools
import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    DataError,
    InterfaceError,
    OperationalError,
    connection,
    connections,
    transaction,
)
from django.utils import timezone

from audit.actors import Actor
from audit.services import audit_pending_execute, audit_pending_insert, audit_record
from elsa_site.celery import app
from elsa_site.db import client_cursor, execute_bound, parameter
from workflows import signals
from workflows.activities.base import (
    ActivityContext,
    Done,
    ExpressionError,
    Fault,
    Reschedule,
    Suspend,
    UnknownActivityType,
    get_activity,
)
from workflows.encryption import InvalidToken
from workflows.models import ActivityExecution, InstanceStatus, WorkflowDefinitionVersion, WorkflowInstance
from workflows.secrets import decrypt_all, encrypt_value, plaintexts, scrub_secrets, scrub_text
from workflows.validation import unstorable_problems

logger = logging.getLogger("elsa.workflow.runtime")

ENGINE_ACTOR = Actor.system("workflow-engine")
RUN_TASK = "workflows.run_instance"
TIMER_TASK = "workflows.fire_timer"
MAX_ERROR = 2000


# --- The parsed definition ----------------------------------------------------------------


@dataclass(frozen=True)
class Graph:
    """A definition version's document, indexed for the runtime (versions are immutable)."""

    nodes: dict[str, dict]
    outgoing: dict[str, list[tuple[str, str]]]
    incoming_sources: dict[str, frozenset[str]]
    secret_variables: frozenset[str]
    start: str


_graphs: dict[int, Graph] = {}


def graph_of(version_id: int) -> Graph:
    """The parsed graph of a definition version, cached per process (versions never change)."""
    graph = _graphs.get(version_id)
    if graph is None:
        document = WorkflowDefinitionVersion.objects.values_list("document", flat=True).get(pk=version_id)
        nodes = {a["id"]: a for a in document["activities"]}
        outgoing: dict[str, list[tuple[str, str]]] = {}
        incoming: dict[str, set[str]] = {}
        for edge in document.get("connections", []):
            outgoing.setdefault(edge["source"], []).append((edge.get("outcome", "Done"), edge["target"]))
            incoming.setdefault(edge["target"], set()).add(edge["source"])
        start = next(a for a in nodes if a not in incoming)
        secret = frozenset(v["name"] for v in document.get("variables", []) if v.get("secret"))
        graph = Graph(nodes, outgoing, {k: frozenset(v) for k, v in incoming.items()}, secret, start)
        if len(_graphs) > 512:  # versions are immutable; the bound only caps memory
            _graphs.clear()
        _graphs[version_id] = graph
    return graph


# --- Status changes: the declared transitions, with audit event and signal ---------------------

_STATUS_EVENTS = {
    InstanceStatus.SUSPENDED: ("suspended", None),
    InstanceStatus.RUNNING: ("resumed", None),
    InstanceStatus.FINISHED: ("finished", signals.instance_finished),
    InstanceStatus.FAULTED: ("faulted", signals.instance_faulted),
    InstanceStatus.CANCELLED: ("cancelled", signals.instance_cancelled),
}


def change_status(instance: WorkflowInstance, target: str, *, now: dt.datetime) -> list:
    """Apply a declared transition in memory; returns the events to emit once the row is saved."""
    instance.check_transition(target)
    instance.status = target
    if target in (InstanceStatus.FINISHED, InstanceStatus.FAULTED, InstanceStatus.CANCELLED):
        instance.finished_at = now
        state = instance.state
        state["tokens"], state["waiting"], state["joins"] = [], {}, {}
        instance.next_timer_at = None
    return [target]


def _lifecycle_event(
    instance: WorkflowInstance, verb: str, *, actor: Actor, context: dict | None = None, metadata: dict | None = None
) -> dict:
    """The audit event of a lifecycle change of the instance (audit_record's keyword arguments)."""
    return {
        "event_type": f"workflow.instance.{verb}",
        "action": verb,
        "resource": ("workflow-instance", str(instance.pk)),
        "actor": actor,
        "context": {
            "definition_id": str(instance.definition_id),
            "definition_version_id": instance.definition_version_id,
            **(context or {}),
        },
        "metadata": metadata,
    }


def _status_event(instance: WorkflowInstance, target: str, *, actor: Actor, context: dict | None) -> dict:
    metadata = {"fault": instance.fault_message} if target == InstanceStatus.FAULTED else None
    return _lifecycle_event(instance, _STATUS_EVENTS[target][0], actor=actor, context=context, metadata=metadata)


def lifecycle_transaction(instance: WorkflowInstance, events: list):
    """The transaction a lifecycle change is saved in: none when no receiver of its signals acts for the instance.

    The change itself is one statement on PostgreSQL (save_state: the row, the execution record,
    the audit events), atomic on its own; a transaction around it is needed only for receivers
    that write with it (signals.LifecycleSignal), and costs two round trips (BEGIN, COMMIT).
    """
    if on_postgresql() and all(_receivers_idle(instance, target) for target in events):
        return nullcontext()
    return transaction.atomic(savepoint=False)


def _receivers_idle(instance: WorkflowInstance, target: str) -> bool:
    signal = _STATUS_EVENTS[target][1]
    return isinstance(signal, signals.LifecycleSignal) and not signal.acts_for(instance)


def _send_status_signal(instance: WorkflowInstance, target: str, *, actor: Actor) -> None:
    signal = _STATUS_EVENTS[target][1]
    if signal is not None:
        signal.send(sender=WorkflowInstance, instance=instance, actor=actor)


def emit_status_events(instance: WorkflowInstance, events: list, *, actor: Actor, context: dict | None = None) -> None:
    """Audit and signal status changes, inside the caller's transaction, after the row is saved."""
    for target in events:
        audit_record(**_status_event(instance, target, actor=actor, context=context))
        _send_status_signal(instance, target, actor=actor)


def save_and_emit(
    instance: WorkflowInstance,
    now: dt.datetime,
    events: list,
    *,
    actor: Actor,
    execution: dict | None = None,
    context: dict | None = None,
    durable: bool = True,
) -> None:
    """Save the run state with the audit events of its status changes, then signal them (emit_status_events).

    Inside the caller's transaction: on PostgreSQL the state write, the execution record and the
    events are one statement (save_state), and the listeners then see the row and its events
    written and write in the same transaction. (With no transaction, as lifecycle_transaction
    leaves a change that no receiver acts for, the statement commits on its own first.) A status
    change is always saved durably. (A step changes the status once at most; with several changes
    every event would precede the signals.)
    """
    audited = [_status_event(instance, target, actor=actor, context=context) for target in events]
    save_state(instance, now, execution, durable=durable or bool(events), audit_events=audited)
    for target in events:
        _send_status_signal(instance, target, actor=actor)


def next_timer(state: dict) -> dt.datetime | None:
    times = [entry["resume_at"] for entry in state.get("waiting", {}).values() if entry.get("timer")]
    return dt.datetime.fromisoformat(min(times)) if times else None


class StaleInstance(Exception):
    """Someone else (cancel, resume, a timer) changed the instance since it was read: reload and retry."""


_MUTABLE = (
    "status",
    "variables",
    "secret_variables",
    "outputs",
    "state",
    "step_count",
    "revision",
    "updated_at",
    "next_timer_at",
    "finished_at",
    "fault_message",
    "fault_activity_id",
)
_JSON = {"variables", "secret_variables", "outputs", "state"}
_EXECUTION_COLUMNS = ActivityExecution.RECORD_FIELDS


# One round trip per step on PostgreSQL: the fenced update of the run state and the insert of the
# ActivityExecution record, which only happens when the update matched (same revision).
# Built from this module's constant column names only; every value is a query parameter.
_SET = ", ".join(f"{c} = {parameter(WorkflowInstance, c)}" for c in _MUTABLE)
_ROW = ", ".join(parameter(ActivityExecution, c) for c in _EXECUTION_COLUMNS)
# A step that changes no lifecycle status (durable=False) writes only the run state: status,
# finished_at and the fault columns change only with a lifecycle transition, which is durable.
_LIFECYCLE_COLUMNS = ("status", "finished_at", "fault_message", "fault_activity_id")
_STEP_COLUMNS = tuple(c for c in _MUTABLE if c not in _LIFECYCLE_COLUMNS)
_STEP_SET = ", ".join(f"{c} = {parameter(WorkflowInstance, c)}" for c in _STEP_COLUMNS)


def _pg_update(durable: bool, assignments: str = _SET) -> str:
    return (
        f"UPDATE workflows_workflowinstance SET {assignments} "  # noqa: S608
        f"FROM (SELECT set_config('synchronous_commit', '{'on' if durable else 'off'}', true)) AS durability "
        "WHERE id = %s AND revision = %s"
    )


_PG_EXECUTION = (
    f"INSERT INTO workflows_activityexecution (instance_id, {', '.join(_EXECUTION_COLUMNS)}) "  # noqa: S608
    f"SELECT upd.id, {_ROW} FROM upd"
)


def _pg_persist(update: str) -> str:
    return f"WITH upd AS ({update} RETURNING id) {_PG_EXECUTION}"


# durable -> (the columns written, {with an execution record: statement}).
_PG_SAVE = {
    durable: (columns, {False: update, True: _pg_persist(update)})
    for durable, columns, update in (
        (True, _MUTABLE, _pg_update(True)),
        (False, _STEP_COLUMNS, _pg_update(False, _STEP_SET)),
    )
}
# A lifecycle change (durable) with its audit events: {with an execution record: the CTEs} of a
# statement whose main part is audit's INSERT of the events, fenced by `upd` (no match, no events).
_PG_AUDITED_CTES = {
    False: f"upd AS ({_pg_update(True)} RETURNING id)",
    True: f"upd AS ({_pg_update(True)} RETURNING id), execution AS ({_PG_EXECUTION})",
}
# A change that ends the run (any status but Running) also hands the run lock over to the
# transaction, saving the unlock's round trip: the same lock is taken at transaction level, then
# the session's hold is released, so no other runner can take it before this change commits (or
# rolls back). Only when `upd` matched (a row to join): a stale write keeps the session lock for
# the retry. The events' INSERT then depends on `released`, which is therefore evaluated.
_PG_RELEASE_CTE = (
    "released AS (SELECT pg_advisory_unlock(held.key) FROM upd, "
    "(SELECT key, pg_advisory_xact_lock(key) FROM (SELECT %s::bigint AS key) AS lock) AS held)"
)


@functools.cache
def _with_events(ctes: str, events_insert: str) -> str:
    # Built once per shape (the same text object every time), so each text can be prepared.
    return f"WITH {ctes} {events_insert}"


def _execute_raw(sql: str, params: list) -> int:
    """Run one fixed engine statement (elsa_site.db.execute_bound), prepared; returns the row count."""
    return execute_bound(sql, params, prepare=True)[0]


@functools.cache
def on_postgresql() -> bool:
    # Asked several times per step; the default database's backend is fixed by the settings for
    # the life of the process, and each `connections[...]` lookup is a thread-local (asgiref) one.
    return connections[DEFAULT_DB_ALIAS].vendor == "postgresql"


def save_state(
    instance: WorkflowInstance,
    now: dt.datetime,
    execution: dict | None = None,
    *,
    durable: bool = True,
    audit_events: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Write the run state (and this step's execution record and audit events), fenced by the revision read.

    ``durable=False`` (a step that changes no lifecycle status, hence writes no audit event)
    commits without waiting for the WAL flush: a worker crash loses nothing (the server has the
    commit), and a database crash can lose only the last fraction of a second of such steps,
    which then run again exactly as after a worker crash. Lifecycle changes always flush. Such a
    step writes only the run state (variables, outputs, scheduling state, counters, timer): the
    status and fault columns, which only a lifecycle change moves, are left as they are.

    ``audit_events`` (audit_record's keyword arguments) record the status change being saved: on
    PostgreSQL in the same statement (audit.services.audit_pending_insert), inserted only if the
    update matched; elsewhere by audit_record after the write.

    Raises StaleInstance when the row moved on meanwhile; the caller's transaction then rolls
    back, the execution record included, and the runner reloads before trying again.
    """
    expected = instance.revision
    instance.revision += 1
    instance.updated_at = now
    instance.next_timer_at = next_timer(instance.state)
    if on_postgresql():
        # Only a Running instance steps without a lifecycle change; anything else is a bug that
        # must not silently leave a status unwritten.
        if not durable and (instance.status != InstanceStatus.RUNNING or audit_events):
            raise RuntimeError("a lifecycle change must be saved durably")
        columns, statements = _PG_SAVE[durable]
        params = [json.dumps(getattr(instance, c)) if c in _JSON else getattr(instance, c) for c in columns]
        params += (instance.pk, expected)
        if execution is not None:
            params += (json.dumps(execution[c]) if c == "output" else execution[c] for c in _EXECUTION_COLUMNS)
        if audit_events:
            # The events are inserted only if the update matched; the statement's row count is theirs.
            ctes = _PG_AUDITED_CTES[execution is not None]
            # Only a change that ends the run looks the run lock up (a resume, say, does not).
            locks, key = (
                ({}, 0) if instance.status == InstanceStatus.RUNNING else (_run_locks(), _run_lock_key(instance.pk))
            )
            release = locks.get(key) == 1
            if release:
                ctes = f"{ctes}, {_PG_RELEASE_CTE}"
                params.append(key)
            insert, event_params = audit_pending_insert(audit_events, after="released" if release else "upd")
            sql = _with_events(ctes, insert)
            matched = audit_pending_execute(sql, params + event_params)[0] == len(audit_events)
            if matched and release:
                del locks[key]
        else:
            # The update matches one row or none; the execution row is inserted only if it matched.
            matched = _execute_raw(statements[execution is not None], params) == 1
    else:
        matched = (
            WorkflowInstance.objects.filter(pk=instance.pk, revision=expected).update(
                **{c: getattr(instance, c) for c in _MUTABLE}
            )
            == 1
        )
        if matched and execution is not None:
            ActivityExecution.objects.create(instance_id=instance.pk, **execution)
        if matched:
            for event in audit_events:
                audit_record(**event)
    if not matched:
        instance.revision = expected
        raise StaleInstance(str(instance.pk))


_INSERT_FIELDS = [(f.attname, f.get_internal_type() == "JSONField") for f in WorkflowInstance._meta.concrete_fields]
# Built from the model's own column names; every value is a query parameter.
_PG_INSERT = (
    f"INSERT INTO {WorkflowInstance._meta.db_table} "  # noqa: S608
    f"({', '.join(f.column for f in WorkflowInstance._meta.concrete_fields)}) "
    f"VALUES ({', '.join(parameter(WorkflowInstance, f.name) for f in WorkflowInstance._meta.concrete_fields)})"
)
_PG_START_CTE = f"inst AS ({_PG_INSERT} RETURNING id)"


def insert_instance(instance: WorkflowInstance, *, actor: Actor) -> None:
    """Insert a new instance with the audit event of its start (its first lifecycle event), in the caller's transaction.

    PostgreSQL: one prebuilt statement (Model.save compiles its INSERT anew each time), the
    instance's INSERT a CTE of the event's: one round trip, and when the instance cannot be
    inserted (a taken idempotency key), neither is the event.
    """
    event = _lifecycle_event(instance, "started", actor=actor)
    if connection.vendor != "postgresql":
        instance.save(force_insert=True)
        audit_record(**event)
        return
    params = [
        json.dumps(getattr(instance, attname)) if is_json else getattr(instance, attname)
        for attname, is_json in _INSERT_FIELDS
    ]
    insert, event_params = audit_pending_insert([event], after="inst")
    audit_pending_execute(_with_events(_PG_START_CTE, insert), params + event_params)
    instance._state.adding = False
    instance._state.db = connection.alias


def send(task: str, args: list, **options) -> None:
    """Send an engine task to ELSA_WORKFLOW_QUEUE (or the default queue)."""
    queue = app.amqp.queues[settings.ELSA_WORKFLOW_QUEUE or app.conf.task_default_queue]
    with app.producer_or_acquire() as producer:
        # Declared once per broker connection, as Celery does it, but without its cost on every
        # later publish: kombu binds a copy of the queue and of its exchange to the channel before
        # it looks the queue up in the connection's cache of declared entities (and finds it
        # there), about a fifth of a publish's instructions. Not yet declared on this connection
        # (a new one, or after a reconnect): Celery declares it, and kombu records it.
        declared = hash(queue) in producer.connection.declared_entities
        # ignore_result: the engine's tasks store no result (ignore_result=True on the tasks), but
        # send_task by name does not know that and, with the Redis result backend, subscribes the
        # sending process to a result channel per task that nobody ever reads: a Redis round trip
        # per start and a subscription that is never dropped.
        # argsrepr/kwargsrepr: the message's display copies of the arguments (short strings here),
        # given as they are rather than built by Celery's generic saferepr, a fifth of a publish's CPU.
        app.send_task(
            task,
            args=args,
            queue=queue,
            producer=producer,
            declare=[] if declared else None,
            ignore_result=True,
            argsrepr=repr(args),
            kwargsrepr="{}",
            # The worker's own time limits (workflows.tasks) decide, not the sender's: send_task
            # would otherwise copy the sending process's task options into the message.
            time_limit=None,
            soft_time_limit=None,
            **options,
        )


def enqueue_run(instance_id) -> None:
    """Run the instance after the current transaction commits (the worker must see the new state)."""
    transaction.on_commit(lambda: send(RUN_TASK, [str(instance_id)]))


def enqueue_timer(instance_id, activity_id: str, entry: dict) -> None:
    eta = dt.datetime.fromisoformat(entry["resume_at"])
    args = [str(instance_id), activity_id, entry["timer"]]
    transaction.on_commit(lambda: send(TIMER_TASK, args, eta=eta))


# --- Resuming a waiting activity (bookmarks, timers) ----------------------------------------


def _resume_change(instance: WorkflowInstance, activity_id: str, outcome: str, output: Any, now: dt.datetime) -> list:
    """Queue the completion of a waiting activity in memory; returns the status events to record."""
    entry = instance.state.setdefault("waiting", {}).pop(activity_id)
    resume = {"outcome": outcome, "output": output}
    instance.state.setdefault("tokens", []).append({"a": activity_id, "resume": resume, **_lineage(entry)})
    return change_status(instance, InstanceStatus.RUNNING, now=now) if instance.status != "Running" else []


def _resumed(instance: WorkflowInstance, *, activity_id: str, outcome: str, actor: Actor) -> None:
    signals.instance_resumed.send(
        sender=WorkflowInstance, instance=instance, actor=actor, activity_id=activity_id, outcome=outcome
    )
    enqueue_run(instance.pk)


def resume_locked(instance: WorkflowInstance, *, activity_id: str, outcome: str, output: Any, actor: Actor) -> None:
    """Queue the completion of a waiting activity; the caller holds the row lock and saves."""
    now = timezone.now()
    events = _resume_change(instance, activity_id, outcome, output, now)
    save_and_emit(instance, now, events, actor=actor, context={"activity_id": activity_id})
    _resumed(instance, activity_id=activity_id, outcome=outcome, actor=actor)


@dataclass(frozen=True)
class Fence:
    """A caller's conditions and writes around a fenced resume (resume_fenced): parts of its one statement.

    ``before``: CTEs (``name AS (...)``, comma-separated) that run first; the change applies only
    if the one named ``check`` returns a row. What it checks it should lock (SELECT ... FOR UPDATE):
    the lock is then held until the statement commits, and taken before the instance's row lock.
    ``after``: CTEs that write only with the change (each selects FROM ``upd``, the instance's
    UPDATE ... RETURNING id). ``events``: the caller's audit events (audit_record's keyword
    arguments), recorded before the instance's own and only with the change.

    Every value is a parameter; keep each text fixed per shape, so that it is prepared once per
    connection.
    """

    check: str
    before: str
    before_params: Sequence[Any]
    after: str
    after_params: Sequence[Any]
    events: Sequence[Mapping[str, Any]]


# What a resume changes: the waiting set and the token queue (state), the status (Suspended to
# Running, at most), and the row's bookkeeping. Built from constant column names; values bound.
_RESUME_COLUMNS = ("status", "state", "revision", "updated_at", "next_timer_at")
_PG_RESUME_UPDATE = _pg_update(True, ", ".join(f"{c} = {parameter(WorkflowInstance, c)}" for c in _RESUME_COLUMNS))


def resume_fenced(
    instance: WorkflowInstance, *, activity_id: str, outcome: str, output: Any, actor: Actor, fence: Fence
) -> bool:
    """resume_locked for an instance read without a lock, outside a transaction (PostgreSQL).

    One statement: the caller's fence, the instance's UPDATE (fenced by the revision read and by
    the fence's check), the caller's writes, and the audit events, atomic on its own: two round
    trips (BEGIN, COMMIT) and the locking read fewer than resume_locked in a transaction. False
    when the instance moved on since it was read or the fence's check failed: nothing was written,
    and `instance` holds the change that was not applied (read it again). Signals and the
    continuation follow the commit; the caller makes sure that no receiver of instance_resumed
    writes (signals.LifecycleSignal.acts_for).
    """
    if not on_postgresql():
        raise RuntimeError("resume_fenced needs PostgreSQL; use resume_locked in a transaction")
    now = timezone.now()
    events = _resume_change(instance, activity_id, outcome, output, now)
    expected = instance.revision
    instance.revision = expected + 1
    instance.updated_at = now
    instance.next_timer_at = next_timer(instance.state)
    context = {"activity_id": activity_id}
    audited = [*fence.events, *(_status_event(instance, target, actor=actor, context=context) for target in events)]
    insert, event_params = audit_pending_insert(audited, after="upd")
    update = f"upd AS ({_PG_RESUME_UPDATE} AND EXISTS (SELECT FROM {fence.check}) RETURNING id)"
    sql = _with_events(", ".join(part for part in (fence.before, update, fence.after) if part), insert)
    params = [*fence.before_params]
    params += [json.dumps(instance.state) if c == "state" else getattr(instance, c) for c in _RESUME_COLUMNS]
    params += [instance.pk, expected, *fence.after_params, *event_params]
    if audit_pending_execute(sql, params)[0] != len(audited):
        return False
    _resumed(instance, activity_id=activity_id, outcome=outcome, actor=actor)
    return True


# --- Running steps ---------------------------------------------------------------------------


class StepCrashed(Exception):
    """An activity raised: the step's transaction is rolled back and the instance faulted afterwards."""

    def __init__(self, activity_id: str, activity_type: str, message: str, started_at: dt.datetime):
        super().__init__(message)
        self.activity_id, self.activity_type, self.message, self.started_at = (
            activity_id,
            activity_type,
            message,
            started_at,
        )


def _run_lock_key(instance_id) -> int:
    # 64 bits of the instance's UUID as a signed bigint: the advisory lock key space of PostgreSQL.
    value = instance_id if isinstance(instance_id, uuid.UUID) else uuid.UUID(str(instance_id))
    return int.from_bytes(value.bytes[:8], "big", signed=True)


def _run_locks(db=None) -> dict[int, int]:
    """The run locks held by the default connection's session: {lock key: times taken}.

    Kept on the psycopg connection itself, so a new connection (a reconnect, a fork) starts with
    none, as its server session does; without a connection, an empty dict. A session advisory lock
    is re-entrant (an eagerly run task may run an instance inside its own run), hence the count.
    """
    raw = (db or connections[DEFAULT_DB_ALIAS]).connection
    if raw is None:
        return {}
    try:
        return raw._elsa_run_locks
    except AttributeError:
        locks = raw._elsa_run_locks = {}
        return locks


_INSTANCE_FIELDS = WorkflowInstance._meta.concrete_fields
# Two statements sent as one query (one round trip): take the run lock, then read the instance.
# In READ COMMITTED each statement takes its own snapshot, so the read, which starts only after
# the lock was granted, sees every step the previous holder committed before it unlocked.
# Built from the model's own column names; both values are query parameters.
_INSTANCE_SELECT = ", ".join(f'"{f.column}"' for f in _INSTANCE_FIELDS)
_PG_LOCK_AND_LOAD = (
    f"SELECT pg_try_advisory_lock(%s); SELECT {_INSTANCE_SELECT} "  # noqa: S608
    f"FROM {WorkflowInstance._meta.db_table} WHERE id = %s"
)
_INSTANCE_ATTNAMES = [f.attname for f in _INSTANCE_FIELDS]
_PG_LOAD = f"SELECT {_INSTANCE_SELECT} FROM {WorkflowInstance._meta.db_table} WHERE id = %s"  # noqa: S608
# (position, column, converters) of the columns whose values the ORM converts (JSON, mostly).
_converters: list | None = None


def _instance_from_row(row: tuple) -> WorkflowInstance:
    """A WorkflowInstance from a row of _PG_LOCK_AND_LOAD or _PG_LOAD, converted as the ORM converts it."""
    global _converters
    db = connections[DEFAULT_DB_ALIAS]
    if _converters is None:
        columns = [f.get_col(WorkflowInstance._meta.db_table) for f in _INSTANCE_FIELDS]
        found = [(i, col, db.ops.get_db_converters(col) + col.get_db_converters(db)) for i, col in enumerate(columns)]
        _converters = [entry for entry in found if entry[2]]
    values = list(row)
    for i, col, converters in _converters:
        value = values[i]
        for convert in converters:
            value = convert(value, col, db)
        values[i] = value
    return WorkflowInstance.from_db(db.alias, _INSTANCE_ATTNAMES, values)


def _load_instance(instance_id) -> WorkflowInstance | None:
    """Read the instance again (after a stale write): one prepared statement on PostgreSQL."""
    if not on_postgresql():
        return WorkflowInstance.objects.filter(pk=instance_id).first()
    _, row = execute_bound(_PG_LOAD, [uuid.UUID(str(instance_id))], prepare=True)
    return None if row is None else _instance_from_row(row)


def _lock_and_load(instance_id) -> tuple[bool, WorkflowInstance | None]:
    """Take the instance's run lock for the session and read the instance; (False, None) if another worker has it.

    A PostgreSQL session advisory lock works across hosts and is released by the server when the
    holder's connection dies (a worker killed with kill -9), so a crash never leaves it stuck.
    SQLite needs none: every transaction there begins IMMEDIATE and holds the database's single
    write lock, so steps are serialized anyway (and the revision fence below still applies).
    """
    if not on_postgresql():
        return True, WorkflowInstance.objects.filter(pk=instance_id).first()
    key = _run_lock_key(instance_id)
    params = [key, uuid.UUID(str(instance_id))]
    # CONN_HEALTH_CHECKS, checked by use: Django would send a SELECT 1 before the first query on a
    # reused connection (a round trip per run); here the lock-and-load itself is that query. If a
    # reused connection turns out broken, it is closed and the query runs once more on a new one,
    # which is what the failed health check would have led to. Its success marks the check done.
    db = connections[DEFAULT_DB_ALIAS]
    db.ensure_connection()  # a connection opened here counts as checked (health_check_done)
    check = db.health_check_enabled and not db.health_check_done and not db.in_atomic_block
    try:
        locked, row = _lock_and_load_query(instance_id, params)
    except (OperationalError, InterfaceError):
        if not check:
            raise
        db.close()  # the server releases a run lock the dead session may have held
        db.ensure_connection()
        locked, row = _lock_and_load_query(instance_id, params)
    if check:
        db.health_check_done = True
    if not locked:
        return False, None
    locks = _run_locks(db)
    locks[key] = locks.get(key, 0) + 1
    return True, None if row is None else _instance_from_row(row)


def _lock_and_load_query(instance_id, params: list) -> tuple[bool, tuple | None]:
    try:
        # A client-binding cursor: two statements in one query need the simple query protocol.
        db = connections[DEFAULT_DB_ALIAS]
        with db.wrap_database_errors:
            cursor = client_cursor(db.connection)
            cursor.execute(_PG_LOCK_AND_LOAD, params)
            row = cursor.fetchone()
            assert row is not None  # SELECT pg_try_advisory_lock(...) always returns one row
            locked = bool(row[0])
            cursor.nextset()
            row = cursor.fetchone()
    except BaseException:
        # The first statement may have taken the lock before the read failed. Should the release
        # fail too, the engine's task closes its connection after a failure, which releases it.
        with suppress(DatabaseError):
            _unlock(params[0])
        raise
    return locked, row


def _release_run_lock(instance_id) -> None:
    """Release the run lock taken by _lock_and_load, unless the change that ended the run already handed it over."""
    if not on_postgresql():
        return
    locks, key = _run_locks(), _run_lock_key(instance_id)
    held = locks.get(key, 0)
    if not held:
        return
    if held == 1:
        del locks[key]
    else:
        locks[key] = held - 1
    _unlock(key)


def _unlock(key: int) -> None:
    try:
        _execute_raw("SELECT pg_advisory_unlock(%s)", [key])
    except (OperationalError, InterfaceError):
        pass  # the connection is gone, and the server released the lock with it


# Whether the instance is Running with a pending token (state.tokens a non-empty list), read by
# the server: no state travels for the answer. Constant text; both values are parameters.
_PG_HAS_RUNNABLE_WORK = (
    "SELECT status = %s AND CASE jsonb_typeof(state -> 'tokens') "
    "WHEN 'array' THEN jsonb_array_length(state -> 'tokens') > 0 ELSE false END "
    "FROM workflows_workflowinstance WHERE id = %s"
)


def _has_runnable_work(instance_id) -> bool:
    if on_postgresql():
        _, row = execute_bound(
            _PG_HAS_RUNNABLE_WORK, [InstanceStatus.RUNNING, uuid.UUID(str(instance_id))], prepare=True
        )
        return bool(row and row[0])
    found = WorkflowInstance.objects.filter(pk=instance_id).values_list("status", "state").first()
    return bool(found and found[0] == InstanceStatus.RUNNING and (found[1] or {}).get("tokens"))


def run_instance(instance_id, *, hand_over_at: float | None = None) -> int:
    """Run every step that can run now; returns the number of steps taken (safe to call twice).

    One runner per instance at a time (the run lock); each step is one transaction whose write is
    fenced by the instance's revision, so a concurrent cancel, resume or timer makes the step roll
    back and run again on the fresh state rather than overwrite it. Past ``hand_over_at`` (a
    time.monotonic() value) no further step starts: the run is enqueued again for a fresh task,
    so only a single overlong step can reach the task's time limit.
    """
    steps = 0
    while True:
        locked, instance = _lock_and_load(instance_id)
        if not locked:
            return steps  # another worker is running it and will see any new work
        try:
            if instance is None:
                return steps
            taken, status = _run_locked(instance_id, instance, hand_over_at)
            steps += taken
        finally:
            _release_run_lock(instance_id)
        if status == _HANDED_OVER:
            send(RUN_TASK, [str(instance_id)])
            return steps
        # A resume committed just before the unlock found the lock held and left its work to us:
        # look once more (an ended instance cannot be resumed, so it needs no second look).
        if status in (InstanceStatus.FINISHED, InstanceStatus.FAULTED, InstanceStatus.CANCELLED, None):
            return steps
        if not _has_runnable_work(instance_id):
            return steps


_HANDED_OVER = "handed over"


def _run_locked(
    instance_id, cached: WorkflowInstance | None, hand_over_at: float | None = None
) -> tuple[int, str | None]:
    """Steps taken and the last status seen (or _HANDED_OVER), starting from the instance read under the lock."""
    steps = 0
    while True:
        if hand_over_at is not None and steps and time.monotonic() >= hand_over_at:
            return steps, _HANDED_OVER
        try:
            cached, more = _step(instance_id, cached)
        except StaleInstance:
            cached = None
            continue
        except StepCrashed as crash:
            fault_after_crash(instance_id, crash)
            return steps + 1, InstanceStatus.FAULTED
        if not more:
            return steps, cached.status if cached is not None else None
        steps += 1


def _step(instance_id, cached: WorkflowInstance | None) -> tuple[WorkflowInstance | None, bool]:
    """Run one step; returns the instance and whether another step may follow."""
    if cached is None:
        cached = _load_instance(instance_id)
        if cached is None:
            return None, False
    instance = cached
    if instance.status != InstanceStatus.RUNNING:
        return instance, False
    graph = graph_of(instance.definition_version_id)
    state = instance.state
    state.setdefault("tokens", [])
    state.setdefault("waiting", {})
    state.setdefault("joins", {})
    now = timezone.now()
    if not state["tokens"]:
        events = settle(instance, now)
        if events:
            with lifecycle_transaction(instance, events):
                save_and_emit(instance, now, events, actor=ENGINE_ACTOR)
        return instance, False
    if instance.step_count >= settings.ELSA_WORKFLOW_MAX_STEPS:
        activity_id = state["tokens"][0]["a"]
        fault_locked(
            instance,
            activity_id=activity_id,
            message=f"the run reached the limit of {settings.ELSA_WORKFLOW_MAX_STEPS} steps "
            f"(ELSA_WORKFLOW_MAX_STEPS) before activity '{activity_id}'; does a loop never end?",
            now=now,
        )
        return instance, False
    token = state["tokens"][0]
    node = graph.nodes.get(token["a"]) or {}
    try:
        activity = get_activity(node.get("type", ""))
        in_transaction = activity.uses_database or "resume" in token
        hold_row = activity.has_external_effects and "resume" not in token
    except UnknownActivityType:
        in_transaction, hold_row = True, False
    # An activity that writes to the database runs inside the step's transaction, so its rows
    # commit with the step. One that does not runs outside any transaction; its step is then
    # persisted by one statement (a transaction only when a lifecycle event is written too).
    try:
        with transaction.atomic() if in_transaction or hold_row else nullcontext():
            if hold_row:
                _hold_row(instance)
            advance(instance, graph, now)
    except DataError as exc:
        # The database refused the step's write (a value refuse_unstorable does not know of): the
        # step rolled back, and faulting it beats failing the same way on every run. PostgreSQL's
        # message may quote the data, so only the error's type is kept.
        activity_id, activity_type = token["a"], node.get("type", "")
        message = f"activity '{activity_id}' ({activity_type}): the database refused to store its result"
        raise StepCrashed(activity_id, activity_type, f"{message} ({type(exc).__name__})", now) from exc
    return instance, instance.status == InstanceStatus.RUNNING


def _hold_row(instance: WorkflowInstance) -> None:
    """Lock the instance's row for the step (its transaction), before an activity with external effects runs.

    The runner holds only the run lock; a resume, timer or cancel takes the row lock and moves the
    revision, which makes the step's fenced save stale and the step run again: an e-mail sent or
    an HTTP call made twice. Held, they wait for this step to commit and then see its result.
    FOR NO KEY UPDATE: rows referencing the instance (execution records) can still be inserted.
    Raises StaleInstance (nothing has run yet) if the instance moved on since it was read.
    """
    current = (
        WorkflowInstance.objects.select_for_update(no_key=True)
        .filter(pk=instance.pk)
        .values_list("revision", flat=True)
        .first()
    )
    if current != instance.revision:
        raise StaleInstance(str(instance.pk))


def settle(instance: WorkflowInstance, now: dt.datetime) -> list:
    """With no runnable branch left: Finished when nothing waits, Suspended when only outside events can continue."""
    state = instance.state
    if instance.status != InstanceStatus.RUNNING or state["tokens"]:
        return []
    waiting = state["waiting"]
    if not waiting:
        return change_status(instance, InstanceStatus.FINISHED, now=now)
    if not any(entry.get("retry") for entry in waiting.values()):
        return change_status(instance, InstanceStatus.SUSPENDED, now=now)
    return []  # a Reschedule timer will continue it: it stays Running


def _lineage(token: Mapping[str, Any]) -> dict:
    """What a token carries along: {"j": {any-Join id: the round of it the token descends from}} or nothing."""
    return {"j": token["j"]} if token.get("j") else {}


def join_ready(instance: WorkflowInstance, graph: Graph, node: dict, token: dict) -> bool:
    """Record a branch arriving at a Join; True when the Join should run now.

    ``all``: runs when every incoming source has arrived, then starts afresh (a loop's next round).
    ``any``: runs on the first arrival of each round. Rounds are told apart by descent, not by
    source: the Join counts its firings, and every token downstream of a firing carries its number
    (``token["j"]``, kept through waits, retries and resumes). An arrival descending from the
    latest firing (or, before the first, from none) opens the next round and runs the Join, which
    makes a loop back into the Join run it every time round; an arrival descending from an earlier
    round (a parallel branch of a round that has already run) is absorbed.
    """
    joins = instance.state["joins"]
    join_id = node["id"]
    lineage = token.get("j") or {}
    if node.get("mode", "all") == "any":
        entry = joins.setdefault(join_id, {"round": 0})
        if lineage.get(join_id, 0) != entry["round"]:
            return False  # a later branch of a round that already ran
        entry["round"] += 1
        token["j"] = {**lineage, join_id: entry["round"]}
        return True
    expected = graph.incoming_sources.get(join_id, frozenset())
    entry = joins.setdefault(join_id, {"arrived": [], "fired": False})
    entry["arrived"].append(token.get("from"))
    # The joined branches' lineages, merged: a token descends from every round any of them does.
    merged = entry.setdefault("j", {})
    for other, round_ in lineage.items():
        merged[other] = max(round_, merged.get(other, 0))
    if set(entry["arrived"]) >= expected:
        joins.pop(join_id)
        if merged:
            token["j"] = merged
        return True
    return False


def advance(instance: WorkflowInstance, graph: Graph, now: dt.datetime) -> None:
    """Run the next token of a locked, Running instance and persist the result (one step)."""
    state = instance.state
    token = state["tokens"].pop(0)
    activity_id = token["a"]
    node = graph.nodes.get(activity_id)
    activity_type = node.get("type", "") if node else ""
    try:
        activity = get_activity(activity_type)
    except UnknownActivityType:
        fault_locked(
            instance,
            activity_id=activity_id,
            message=f"activity '{activity_id}' has the unknown type {activity_type!r}",
            now=now,
        )
        return
    assert node is not None  # a missing node has no type: it faulted above
    instance.step_count += 1

    if activity.is_join and "resume" not in token and not join_ready(instance, graph, node, token):
        save_state(instance, now, durable=False)  # a branch arrived; the Join waits for the others
        return

    try:
        secret_values = decrypt_all(instance.secret_variables) if instance.secret_variables else {}
    except InvalidToken:
        fault_locked(
            instance,
            activity_id=activity_id,
            message="a secret variable cannot be decrypted with ELSA_ENCRYPTION_KEYS (was its key removed?)",
            now=now,
        )
        return
    variables = {**instance.variables, **secret_values}
    attempt = token.get("attempt", 0)
    ctx = ActivityContext(
        node=node,
        instance=instance,
        activity_id=activity_id,
        attempt=attempt,
        variables=variables,
        input=instance.input,
        outputs=instance.outputs,
        actor=ENGINE_ACTOR,
        _secrets=plaintexts(secret_values.values()) if secret_values else frozenset(),
    )
    if "resume" in token:
        result = Done(token["resume"]["outcome"], token["resume"].get("output"))
    else:
        result = refuse_unstorable(execute_activity(activity, ctx, activity_type, now), ctx)

    # Assignments: secret variables are encrypted before anything is written, and a plain
    # variable never receives a secret's plaintext (copying a secret into it stores "****").
    if ctx._assigned:
        assigned_secrets = [v for k, v in ctx._assigned.items() if k in graph.secret_variables]
        if assigned_secrets:
            ctx._secrets = ctx._secrets | plaintexts(assigned_secrets)
        for name, value in ctx._assigned.items():
            if name in graph.secret_variables:
                instance.secret_variables[name] = encrypt_value(value)
            else:
                instance.variables[name] = scrub_secrets(value, ctx._secrets)
    secrets = ctx._secrets

    finished_at = timezone.now()
    if isinstance(result, Done):
        output = scrub_secrets(result.output, secrets)
        if output is not None:
            instance.outputs[activity_id] = output
        row = record_execution(
            instance,
            token,
            activity_id,
            activity_type,
            status=ActivityExecution.Status.COMPLETED,
            attempt=attempt,
            started_at=now,
            finished_at=finished_at,
            outcome=result.outcome,
            output=output,
        )
        if activity.ends_instance:
            state["tokens"], state["waiting"] = [], {}
        else:
            for outcome, target in graph.outgoing.get(activity_id, ()):
                if outcome == result.outcome:
                    state["tokens"].append({"a": target, "from": activity_id, **_lineage(token)})
        events = settle(instance, now)
        if not events:
            save_state(instance, now, row, durable=False)
            return
        # The state, the record and the audit event are one statement; a transaction around it
        # only for receivers of the lifecycle signal that write with it.
        with lifecycle_transaction(instance, events):
            save_and_emit(instance, now, events, actor=ENGINE_ACTOR, execution=row)
    elif isinstance(result, Suspend):
        entry: dict[str, Any] = {
            "since": now.isoformat(),
            "from": token.get("from"),
            "data": scrub_secrets(result.data, secrets),
            **_lineage(token),
        }
        if result.resume_at is not None:
            resume_at = result.resume_at.astimezone(dt.UTC).isoformat()  # UTC: the strings compare in time order
            entry.update(timer=uuid.uuid4().hex, resume_at=resume_at, outcome=result.timer_outcome)
        state["waiting"][activity_id] = entry
        row = record_execution(
            instance,
            token,
            activity_id,
            activity_type,
            status=ActivityExecution.Status.SUSPENDED,
            attempt=attempt,
            started_at=now,
            finished_at=None,
        )
        events = settle(instance, now)
        with transaction.atomic(savepoint=False):  # listeners of the signal write in this transaction
            save_and_emit(instance, now, events, actor=ENGINE_ACTOR, execution=row, durable=bool(events))
            signals.instance_suspended.send(
                sender=WorkflowInstance,
                instance=instance,
                actor=ENGINE_ACTOR,
                activity_id=activity_id,
                data=result.data,
            )
            if "timer" in entry:
                enqueue_timer(instance.pk, activity_id, entry)
    elif isinstance(result, Reschedule):
        countdown = max(0.0, float(result.countdown))
        entry = {
            "retry": True,
            "attempt": attempt + 1,
            "from": token.get("from"),
            **_lineage(token),
            "timer": uuid.uuid4().hex,
            "resume_at": (now + dt.timedelta(seconds=countdown)).isoformat(),
        }
        state["waiting"][activity_id] = entry
        row = record_execution(
            instance,
            token,
            activity_id,
            activity_type,
            status=ActivityExecution.Status.RESCHEDULED,
            attempt=attempt,
            started_at=now,
            finished_at=finished_at,
            error=error_text(str(result.reason), secrets),
        )
        save_state(instance, now, row, durable=False)
        enqueue_timer(instance.pk, activity_id, entry)
    else:  # Fault
        fault_locked(
            instance,
            activity_id=activity_id,
            message=f"activity '{activity_id}' ({activity_type}): {result.message}",
            now=now,
            secrets=secrets,
            token=token,
            activity_type=activity_type,
            attempt=attempt,
        )


def execute_activity(activity, ctx: ActivityContext, activity_type: str, now: dt.datetime):
    """Call the activity; an expression failure or a bad result is a Fault, any other error crashes the step."""
    try:
        result = activity.execute(ctx)
    except ExpressionError as exc:
        return Fault(f"expression {exc.expression!r} failed: {exc.message}")
    except (OperationalError, InterfaceError):
        raise  # the database went away: let the task fail and the stalled sweep retry it
    except SoftTimeLimitExceeded:
        raise  # the run task's time limit: workflows.tasks faults the instance saying so
    except Exception as exc:  # noqa: BLE001 - any activity failure faults the instance, never the worker
        message = scrub_text(
            f"activity '{ctx.activity_id}' ({activity_type}) failed: {type(exc).__name__}: {exc}", ctx._secrets
        )
        raise StepCrashed(ctx.activity_id, activity_type, message[:MAX_ERROR], now) from exc
    if not isinstance(result, Done | Suspend | Fault | Reschedule):
        return Fault("the activity returned no valid result")
    return result


def refuse_unstorable(result, ctx: ActivityContext):
    """The result, or a Fault when what it stores holds what the database cannot (NUL, NaN, Infinity).

    Checked before anything of the step is applied, so the step faults through the usual path
    instead of failing its save on every run (and running its side effects again each time).
    """
    produced = [(f"the value of variable '{name}'", value) for name, value in ctx._assigned.items()]
    if isinstance(result, Done):
        produced.append(("its output", result.output))
    elif isinstance(result, Suspend):
        produced.append(("its wait data", result.data))
    for what, value in produced:
        problems = unstorable_problems(value)
        if problems:
            ctx._assigned.clear()
            where = f" at {problems[0]['pointer']}" if problems[0]["pointer"] else ""
            return Fault(f"{what}{where} {problems[0]['message']}")
    return result


def storable_text(text: str) -> str:
    """A text for a text column: PostgreSQL's text holds no NUL character, shown escaped instead."""
    return text.replace("\x00", "\\u0000")


def error_text(text: str, secrets: frozenset[str]) -> str:
    """An error or fault message as stored: secrets scrubbed from the whole text, storable, then cut."""
    return storable_text(scrub_text(text, secrets))[:MAX_ERROR]


def record_execution(
    instance, token, activity_id, activity_type, *, status, attempt, started_at, finished_at, **fields
) -> dict | None:
    """The ActivityExecution row of this step, for save_state to insert with the new state.

    A resumed activity completes its Suspended record instead (updated here, in the step's
    transaction), so every activity run has one record; then None is returned.
    """
    if "resume" in token and _complete_suspended(instance, activity_id, status, finished_at, fields):
        return None
    return {
        "activity_id": activity_id,
        "activity_type": activity_type,
        "status": status,
        "attempt": attempt,
        "started_at": started_at,
        "finished_at": finished_at,
        "outcome": fields.get("outcome", ""),
        "output": fields.get("output"),
        "error": fields.get("error", ""),
    }


# The latest Suspended record of the activity, completed in one statement (the run lock is held,
# and the step's transaction makes it commit with the step). Constant text; values are parameters.
_PG_COMPLETE_SUSPENDED = (
    "UPDATE workflows_activityexecution SET status = %s, finished_at = %s::timestamptz, "
    "outcome = %s, output = %s::jsonb, error = %s "
    "WHERE id = (SELECT id FROM workflows_activityexecution "
    "WHERE instance_id = %s AND activity_id = %s AND status = %s ORDER BY id DESC LIMIT 1)"
)


def _complete_suspended(instance, activity_id: str, status: str, finished_at, fields: dict) -> bool:
    """Complete the activity's latest Suspended record; False when it has none."""
    if not on_postgresql():
        ids = list(
            ActivityExecution.objects.filter(
                instance=instance, activity_id=activity_id, status=ActivityExecution.Status.SUSPENDED
            )
            .order_by("-id")
            .values_list("id", flat=True)[:1]
        )
        if ids:
            ActivityExecution.objects.filter(id=ids[0]).update(status=status, finished_at=finished_at, **fields)
        return bool(ids)
    # The Suspended record has outcome "", output null and error "": the fields this completion
    # does not set keep those values, as an insert of the completed record would have them.
    params = [
        status,
        finished_at,
        fields.get("outcome", ""),
        json.dumps(fields.get("output")),
        fields.get("error", ""),
        instance.pk,
        activity_id,
        ActivityExecution.Status.SUSPENDED,
    ]
    return _execute_raw(_PG_COMPLETE_SUSPENDED, params) == 1


def fault_locked(
    instance: WorkflowInstance,
    *,
    activity_id: str,
    message: str,
    now: dt.datetime,
    secrets: frozenset[str] = frozenset(),
    token: dict | None = None,
    activity_type: str = "",
    attempt: int = 0,
    actor: Actor = ENGINE_ACTOR,
) -> None:
    """Fault a locked instance with a message naming the activity (secrets scrubbed)."""
    message = error_text(message, secrets)
    row = None
    if token is not None:
        row = record_execution(
            instance,
            token,
            activity_id,
            activity_type,
            status=ActivityExecution.Status.FAULTED,
            attempt=attempt,
            started_at=now,
            finished_at=timezone.now(),
            error=message,
        )
    instance.fault_message = message
    instance.fault_activity_id = activity_id
    events = change_status(instance, InstanceStatus.FAULTED, now=now)
    with lifecycle_transaction(instance, events):
        save_and_emit(instance, now, events, actor=actor, execution=row, context={"activity_id": activity_id})
    logger.warning(
        "workflow instance faulted", extra={"workflow_instance_id": str(instance.pk), "activity_id": activity_id}
    )


def fault_after_crash(instance_id, crash: StepCrashed) -> None:
    """Fault an instance whose step raised, in a fresh transaction after the step rolled back."""
    with transaction.atomic():
        instance = WorkflowInstance.objects.select_for_update().filter(pk=instance_id).first()
        if instance is None or instance.status != InstanceStatus.RUNNING:
            return
        fault_locked(
            instance,
            activity_id=crash.activity_id,
            message=crash.message,
            now=timezone.now(),
            token={"a": crash.activity_id},
            activity_type=crash.activity_type,
        )


def fault_overrun(instance_id, *, seconds: float, setting: str = "ELSA_WORKFLOW_RUN_TIME_LIMIT") -> None:
    """Fault an instance whose run task overran its time limit, naming the activity that was running.

    Called after the task's connection (and with it the run lock) is gone: the step in flight
    rolled back, so it is the first pending one. Fenced like any change (row lock, revision).
    """
    with transaction.atomic():
        instance = WorkflowInstance.objects.select_for_update().filter(pk=instance_id).first()
        if instance is None or instance.status != InstanceStatus.RUNNING:
            return
        tokens = (instance.state or {}).get("tokens") or [{"a": ""}]
        activity_id = tokens[0]["a"]
        node = graph_of(instance.definition_version_id).nodes.get(activity_id) or {}
        activity_type = node.get("type", "")
        fault_locked(
            instance,
            activity_id=activity_id,
            message=f"activity '{activity_id}' ({activity_type}) was stopped: the run task exceeded its time limit "
            f"of {seconds:g} seconds ({setting})",
            now=timezone.now(),
            token={"a": activity_id},
            activity_type=activity_type,
        )


# --- Timers and sweeps -----------------------------------------------------------------------


def fire_timer(instance_id, activity_id: str, timer_id: str) -> bool:
    """Continue an activity whose timer is due; a stale timer (cancelled, already fired) does nothing."""
    with transaction.atomic():
        instance = WorkflowInstance.objects.select_for_update().filter(pk=instance_id).first()
        if instance is None or not instance.is_live:
            return False
        entry = instance.state.get("waiting", {}).get(activity_id)
        # The timer id is the fence: cancel, resume or an earlier firing removed or replaced it.
        if not entry or entry.get("timer") != timer_id:
            return False
        if entry.get("retry"):
            now = timezone.now()
            instance.state["waiting"].pop(activity_id)
            instance.state.setdefault("tokens", []).append(
                {"a": activity_id, "from": entry.get("from"), "attempt": entry["attempt"], **_lineage(entry)}
            )
            events = change_status(instance, InstanceStatus.RUNNING, now=now) if instance.status != "Running" else []
            save_and_emit(instance, now, events, actor=ENGINE_ACTOR, context={"activity_id": activity_id})
            enqueue_run(instance.pk)
        else:
            resume_locked(
                instance, activity_id=activity_id, outcome=entry.get("outcome", "Done"), output=None, actor=ENGINE_ACTOR
            )
    return True


def sweep_due_timers(*, grace_seconds: float = 1.0, limit: int = 500) -> int:
    """Fire timers that are due but were lost (a restart dropped their Celery ETA task)."""
    due = timezone.now() - dt.timedelta(seconds=grace_seconds)
    fired = 0
    rows = WorkflowInstance.objects.filter(
        status__in=(InstanceStatus.RUNNING, InstanceStatus.SUSPENDED), next_timer_at__lte=due
    ).values_list("pk", "state")[:limit]
    for pk, state in rows:
        for activity_id, entry in (state or {}).get("waiting", {}).items():
            if entry.get("timer") and dt.datetime.fromisoformat(entry["resume_at"]) <= due:
                send(TIMER_TASK, [str(pk), activity_id, entry["timer"]])
                fired += 1
    return fired


def sweep_stalled_instances(*, stall_seconds: float | None = None, limit: int = 500) -> int:
    """Re-enqueue Running instances with runnable work that nobody advanced for a while (a worker died)."""
    stall = settings.ELSA_WORKFLOW_STALL_SECONDS if stall_seconds is None else stall_seconds
    cutoff = timezone.now() - dt.timedelta(seconds=stall)
    enqueued = 0
    rows = WorkflowInstance.objects.filter(status=InstanceStatus.RUNNING, updated_at__lte=cutoff).values_list(
        "pk", "state"
    )[:limit]
    for pk, state in rows:
        if (state or {}).get("tokens"):
            # A duplicate run is harmless: the row lock lets one task step at a time.
            send(RUN_TASK, [str(pk)])
            enqueued += 1
    return enqueued
