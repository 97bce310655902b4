"""The runtime's own statements (reload, runnable-work check, resumed records, task messages, a start or a
lifecycle step with its audit event) agree with the ORM, in as few round trips as stated."""

import threading
import uuid

import psycopg
import pytest
from django.db import OperationalError, connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.chain import EVENT_COLUMNS
from audit.models import AuditEvent, PendingAuditEvent
from audit.services import audit_record
from audit.verification import verify_chain
from elsa_site.errors import Conflict, InvalidInput
from tests.audit_log import chained_events
from tests.conftest import wait_until
from tests.db_sessions import other_session, sessions_blocked_by_me
from tests.workflows.factories import ACTOR, five_step_document, linear, published
from workflows import runtime, signals
from workflows.models import ActivityExecution, WorkflowInstance
from workflows.services import (
    workflow_definition_execute,
    workflow_instance_cancel,
    workflow_instance_resume,
    workflow_instance_resume_fenced,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WAIT_THEN_FINISH = linear({"id": "wait", "type": "Delay", "seconds": 3600}, {"id": "done", "type": "Finish"})


@pytest.fixture(autouse=True)
def runs_stay_in_this_process(settings):
    """Send the engine's tasks to a queue no worker consumes: these tests drive the runtime themselves."""
    from elsa_site.celery import app

    settings.ELSA_WORKFLOW_QUEUE = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-statements"
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(settings.ELSA_WORKFLOW_QUEUE)
    yield
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(settings.ELSA_WORKFLOW_QUEUE)


def started(document=WAIT_THEN_FINISH, input=None) -> WorkflowInstance:
    return workflow_definition_execute(definition=published(document), input=input or {}, actor=ACTOR)


def test_reloaded_instance_equals_the_orm_read():
    instance = started(
        linear(
            {"id": "wait", "type": "Delay", "seconds": 3600},
            variables=[{"name": "amount"}, {"name": "token", "secret": True}],
        ),
        {"amount": 7, "token": "s3cret-value"},
    )
    runtime.run_instance(instance.pk)
    reloaded = runtime._load_instance(instance.pk)
    expected = WorkflowInstance.objects.get(pk=instance.pk)
    assert reloaded is not None and not reloaded._state.adding
    for field in WorkflowInstance._meta.concrete_fields:
        assert getattr(reloaded, field.attname) == getattr(expected, field.attname), field.name
    assert runtime._load_instance(uuid.uuid4()) is None


def test_runnable_work_means_running_with_a_pending_token():
    instance = started()
    assert runtime._has_runnable_work(instance.pk)  # Running, its first token pending
    runtime.run_instance(instance.pk)
    assert not runtime._has_runnable_work(instance.pk)  # Suspended on the timer
    workflow_instance_resume(instance=instance, activity_id="wait", actor=ACTOR)
    assert runtime._has_runnable_work(instance.pk)  # Running again, the resume queued as a token
    WorkflowInstance.objects.filter(pk=instance.pk).update(state={"waiting": {}, "joins": {}})
    assert not runtime._has_runnable_work(instance.pk)  # Running without any token
    assert not runtime._has_runnable_work(uuid.uuid4())


def test_stale_step_reloads_and_runs_each_activity_once():
    document = linear(
        {"id": "a", "type": "SetVariable", "variable": "n", "value": "1"},
        {"id": "b", "type": "SetVariable", "variable": "n", "value": "vars.n + 1"},
        variables=[{"name": "n"}],
    )
    instance = started(document)
    stale = WorkflowInstance.objects.get(pk=instance.pk)
    # Someone else wrote the instance meanwhile (a new revision, same run state).
    WorkflowInstance.objects.filter(pk=instance.pk).update(revision=stale.revision + 1)
    _, status = runtime._run_locked(instance.pk, stale)
    assert status == "Finished"
    instance.refresh_from_db()
    assert instance.variables == {"n": 2}
    executed = ActivityExecution.objects.filter(instance=instance).order_by("id").values_list("activity_id", flat=True)
    assert list(executed) == ["a", "b"]


def test_resume_completes_the_latest_suspended_record_in_place():
    instance = started()
    runtime.run_instance(instance.pk)
    suspended = ActivityExecution.objects.get(instance=instance)
    workflow_instance_resume(instance=instance, activity_id="wait", output={"answer": 42}, actor=ACTOR)
    runtime.run_instance(instance.pk)
    record = ActivityExecution.objects.get(pk=suspended.pk)
    assert (record.status, record.outcome, record.output, record.error) == ("Completed", "Done", {"answer": 42}, "")
    assert record.finished_at is not None and record.finished_at >= record.started_at
    assert ActivityExecution.objects.filter(instance=instance).count() == 2  # wait (completed) and done


def test_cancelled_suspended_record_is_not_completed_by_a_later_run():
    instance = started()
    runtime.run_instance(instance.pk)
    workflow_instance_cancel(instance=instance, actor=ACTOR)
    runtime.run_instance(instance.pk)
    assert list(ActivityExecution.objects.filter(instance=instance).values_list("status", flat=True)) == ["Cancelled"]


def _queued_run_ids() -> list[str]:
    """Take every message off the engine's queue; the instance ids of the run messages among them."""
    from django.conf import settings

    from elsa_site.celery import app

    ids = []
    with app.connection_for_write() as conn:
        while (message := conn.default_channel.basic_get(settings.ELSA_WORKFLOW_QUEUE, no_ack=True)) is not None:
            if message.headers["task"] == runtime.RUN_TASK:
                ids.append(message.decode()[0][0])
    return ids


def test_run_message_names_the_instance_in_its_display_arguments(settings):
    from elsa_site.celery import app

    instance = started()
    with app.connection_for_write() as conn:
        message = conn.default_channel.basic_get(settings.ELSA_WORKFLOW_QUEUE, no_ack=True)
    assert message is not None
    assert message.headers["task"] == runtime.RUN_TASK
    assert message.headers["argsrepr"] == repr([str(instance.pk)]) and message.headers["kwargsrepr"] == "{}"
    args, kwargs, _ = message.decode()
    assert (args, kwargs) == ([str(instance.pk)], {})


def test_the_engine_declares_its_queue_once_per_broker_connection(settings, monkeypatch):
    """A publish has Celery declare the queue when its broker connection has not declared it yet
    (kombu's cache of declared entities); later publishes on that connection skip the declaration
    and its work. Every message is queued either way."""
    import kombu.common

    from elsa_site.celery import app

    queue = app.amqp.queues[settings.ELSA_WORKFLOW_QUEUE]
    declarations = []
    declare = kombu.common._maybe_declare

    def recording(entity, channel):
        declarations.append(entity.name)
        return declare(entity, channel)

    monkeypatch.setattr(kombu.common, "_maybe_declare", recording)

    def declared_on_the_connection() -> bool:
        with app.producer_or_acquire() as producer:  # the one send() takes next, in this thread
            return hash(queue) in producer.connection.declared_entities

    with app.producer_or_acquire() as producer:  # as on a new connection, or after a reconnect
        producer.connection.declared_entities.discard(hash(queue))
    runtime.send(runtime.RUN_TASK, ["first"])
    assert declarations == [queue.name] and declared_on_the_connection()
    runtime.send(runtime.RUN_TASK, ["second"])
    runtime.send(runtime.RUN_TASK, ["third"])
    assert declarations == [queue.name]  # not again on this connection
    assert _queued_run_ids() == ["first", "second", "third"]


# --- A start and a lifecycle step: the write and its audit event in one statement ----------------

FINISH = linear({"id": "done", "type": "Finish"})
# What audit_pendingauditevent holds of an event besides its id, event_id, timestamp and the
# canonical text around them (checked by verify_chain once chained): the hashed columns between
# the timestamp and the two hashes.
PAYLOAD = EVENT_COLUMNS[EVENT_COLUMNS.index("timestamp") + 1 : EVENT_COLUMNS.index("previous_hash")]


def _statements(queries) -> list[str]:
    return [query["sql"] for query in queries.captured_queries]


def _payload(event) -> dict:
    return {name: getattr(event, name) for name in PAYLOAD}


def _as_audit_record_writes(**fields) -> dict:
    """The payload audit_record writes for `fields`, recorded and read back in a transaction that rolls back."""
    with transaction.atomic():
        audit_record(**fields)
        payload = _payload(PendingAuditEvent.objects.order_by("-id").first())
        transaction.set_rollback(True)
    return payload


def test_a_start_inserts_the_instance_and_its_event_in_one_statement():
    definition = published(FINISH)
    workflow_definition_execute(definition=definition, input={}, actor=ACTOR)  # the graph is cached now
    _queued_run_ids()  # its run message, taken off the queue
    with CaptureQueriesContext(connection) as queries:
        instance = workflow_definition_execute(definition=definition, input={}, actor=ACTOR)
    statements = _statements(queries)
    # Outside a transaction: the one statement in autocommit, no BEGIN and COMMIT around it.
    assert len(statements) == 1, statements
    assert statements[0].startswith("WITH inst AS (INSERT INTO workflows_workflowinstance ")
    assert "INSERT INTO audit_pendingauditevent " in statements[0]
    # The run was enqueued once the statement returned (committed).
    assert _queued_run_ids() == [str(instance.pk)]
    [started_event] = chained_events().filter(event_type="workflow.instance.started", resource_id=str(instance.pk))
    context = {"definition_id": str(definition.pk), "definition_version_id": definition.published_version_id}
    assert _payload(started_event) == _as_audit_record_writes(
        event_type="workflow.instance.started",
        action="started",
        resource=("workflow-instance", str(instance.pk)),
        actor=ACTOR,
        context=context,
    )
    assert (started_event.actor_type, started_event.actor_id, started_event.context) == ("user", "tester", context)
    assert verify_chain().is_valid


def test_a_finishing_step_writes_state_record_and_event_in_one_statement():
    instance = started(five_step_document(), {"amount": 5000})
    with CaptureQueriesContext(connection) as queries:
        runtime.run_instance(instance.pk)
    statements = _statements(queries)
    # Four steps that change no status and the Finish step, one statement each and no transaction
    # (no receiver of instance_finished acts for an instance that cannot have bookmarks); the
    # lock-and-load before them is sent outside Django's query log, and the finishing statement
    # itself hands the run lock over to its transaction.
    assert len(statements) == 5, statements
    assert "BEGIN" not in statements and "COMMIT" not in statements
    finishing = statements[4]
    assert finishing.startswith("WITH upd AS (UPDATE workflows_workflowinstance SET status = ")
    assert "execution AS (INSERT INTO workflows_activityexecution " in finishing
    assert "INSERT INTO audit_pendingauditevent " in finishing
    assert [sql for sql in statements if "audit_pendingauditevent" in sql] == [finishing]
    assert not [sql for sql in statements if "pg_advisory_unlock(%s)" in sql and "released" not in sql]
    assert _advisory_locks_of_my_session() == 0
    instance.refresh_from_db()
    assert instance.status == "Finished"
    assert list(instance.executions.order_by("id").values_list("activity_id", flat=True)) == [
        "set",
        "big",
        "label",
        "log",
        "done",
    ]
    [finished_event] = chained_events().filter(event_type="workflow.instance.finished", resource_id=str(instance.pk))
    assert _payload(finished_event) == _as_audit_record_writes(
        event_type="workflow.instance.finished",
        action="finished",
        resource=("workflow-instance", str(instance.pk)),
        actor=runtime.ENGINE_ACTOR,
        context={"definition_id": str(instance.definition_id), "definition_version_id": instance.definition_version_id},
        metadata=None,
    )
    assert verify_chain().is_valid


def test_a_faulting_step_records_the_fault_in_its_event():
    document = linear(
        {"id": "calc", "type": "SetVariable", "variable": "x", "value": "input.a / input.b"}, variables=[{"name": "x"}]
    )
    instance = started(document, {"a": 1, "b": 0})
    runtime.run_instance(instance.pk)
    instance.refresh_from_db()
    assert instance.status == "Faulted"
    [faulted_event] = chained_events().filter(event_type="workflow.instance.faulted", resource_id=str(instance.pk))
    assert faulted_event.metadata == {"fault": instance.fault_message}
    assert faulted_event.context["activity_id"] == "calc"
    assert verify_chain().is_valid


def test_listeners_run_after_the_row_and_its_event_are_written_in_the_same_transaction():
    instance = started(FINISH)
    seen = []

    def listener(sender, instance, actor, **kwargs):
        row = WorkflowInstance.objects.values_list("status", "revision").get(pk=instance.pk)
        recorded = PendingAuditEvent.objects.filter(
            event_type="workflow.instance.finished", resource_id=str(instance.pk)
        ).exists()
        seen.append((row, recorded, connection.in_atomic_block))

    signals.instance_finished.connect(listener)
    try:
        runtime.run_instance(instance.pk)
    finally:
        signals.instance_finished.disconnect(listener)
    instance.refresh_from_db()
    assert seen == [(("Finished", instance.revision), True, True)]


def test_a_stale_lifecycle_write_inserts_no_record_and_no_event_and_sends_no_signal():
    instance = started(FINISH)
    stale = WorkflowInstance.objects.get(pk=instance.pk)
    WorkflowInstance.objects.filter(pk=instance.pk).update(revision=stale.revision + 1)
    sent = []
    signals.instance_finished.connect(sent.append)
    now = timezone.now()
    row = runtime.record_execution(
        stale, {"a": "done"}, "done", "Finish", status="Completed", attempt=0, started_at=now, finished_at=now
    )
    try:
        with transaction.atomic():
            events = runtime.change_status(stale, "Finished", now=now)
            with pytest.raises(runtime.StaleInstance):
                runtime.save_and_emit(stale, now, events, actor=runtime.ENGINE_ACTOR, execution=row)
            assert not PendingAuditEvent.objects.filter(event_type="workflow.instance.finished").exists()
            assert not ActivityExecution.objects.filter(instance_id=instance.pk).exists()
    finally:
        signals.instance_finished.disconnect(sent.append)
    assert sent == []
    assert stale.revision == WorkflowInstance.objects.get(pk=instance.pk).revision - 1  # as read
    assert WorkflowInstance.objects.get(pk=instance.pk).status == "Running"


def _locker() -> psycopg.Connection:
    return other_session()


def _session_lock_timeout(value: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('lock_timeout', %s, false)", [value])


def test_a_start_whose_event_cannot_be_written_inserts_no_instance():
    definition = published(FINISH)
    with _locker() as locker:
        locker.execute("LOCK TABLE audit_pendingauditevent IN ACCESS EXCLUSIVE MODE")
        _session_lock_timeout("200ms")
        try:
            with pytest.raises(OperationalError):
                workflow_definition_execute(definition=definition, input={}, actor=ACTOR)
        finally:
            _session_lock_timeout("0")
    assert not WorkflowInstance.objects.filter(definition=definition).exists()
    assert not chained_events().filter(event_type="workflow.instance.started").exists()


def test_a_finishing_step_whose_event_cannot_be_written_leaves_the_instance_as_it_was():
    instance = started(FINISH)
    before = WorkflowInstance.objects.get(pk=instance.pk)
    with _locker() as locker:
        locker.execute("LOCK TABLE audit_pendingauditevent IN ACCESS EXCLUSIVE MODE")
        _session_lock_timeout("200ms")
        try:
            with pytest.raises(OperationalError):
                runtime.run_instance(instance.pk)
        finally:
            _session_lock_timeout("0")
    after = WorkflowInstance.objects.get(pk=instance.pk)
    assert (after.status, after.revision, after.state) == ("Running", before.revision, before.state)
    assert not ActivityExecution.objects.filter(instance=instance).exists()
    assert not chained_events().filter(event_type="workflow.instance.finished").exists()
    # Once the table is free again, the step runs as usual.
    runtime.run_instance(instance.pk)
    assert WorkflowInstance.objects.get(pk=instance.pk).status == "Finished"
    assert chained_events().filter(event_type="workflow.instance.finished", resource_id=str(instance.pk)).count() == 1
    assert verify_chain().is_valid


def test_the_loser_of_an_idempotency_race_returns_the_winner_and_records_no_event():
    definition = published(FINISH)
    winner: dict = {}
    holding = threading.Event()

    def win():
        try:
            with transaction.atomic():
                winner["instance"] = workflow_definition_execute(
                    definition=definition, input={}, actor=ACTOR, idempotency_key="race"
                )
                holding.set()
                # Commit only once the loser's insert waits on this one's key.
                wait_until(lambda: sessions_blocked_by_me() > 0, timeout=30, message="the loser to wait for the key")
        finally:
            holding.set()
            connections.close_all()

    thread = threading.Thread(target=win)
    thread.start()
    assert holding.wait(timeout=30)
    with CaptureQueriesContext(connection) as queries:
        loser = workflow_definition_execute(definition=definition, input={}, actor=ACTOR, idempotency_key="race")
    thread.join(timeout=60)
    # The loser's statement failed on the key (its savepoint rolled back) and it read the winner.
    assert any(sql.startswith("ROLLBACK TO SAVEPOINT") for sql in _statements(queries)), _statements(queries)
    assert loser.pk == winner["instance"].pk
    assert WorkflowInstance.objects.filter(definition=definition).count() == 1
    started_events = chained_events().filter(event_type="workflow.instance.started")
    assert list(started_events.values_list("resource_id", flat=True)) == [str(loser.pk)]
    assert AuditEvent.objects.filter(resource_id=str(loser.pk)).count() == 1
    assert verify_chain().is_valid


def test_a_start_inside_a_callers_transaction_enqueues_its_run_only_at_commit():
    definition = published(FINISH)
    with transaction.atomic():
        instance = workflow_definition_execute(definition=definition, input={}, actor=ACTOR)
        assert _queued_run_ids() == []  # not before the caller's commit
        with other_session() as other:
            # Nor visible to anyone else yet: it is the caller's transaction's write.
            assert other.execute(
                "SELECT count(*) FROM workflows_workflowinstance WHERE id = %s", [instance.pk]
            ).fetchone() == (0,)
    assert _queued_run_ids() == [str(instance.pk)]


def _advisory_locks_of_my_session() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
        return cursor.fetchone()[0]


def _finish_locked(instance: WorkflowInstance) -> None:
    """What the Finish step's save does: the lifecycle change with its event, inside a transaction."""
    now = timezone.now()
    events = runtime.change_status(instance, "Finished", now=now)
    runtime.save_and_emit(instance, now, events, actor=runtime.ENGINE_ACTOR)


def _run_lock_free(key: int) -> bool:
    """Whether another session can take the run lock right now (it lets it go again at once)."""
    with other_session(autocommit=True) as other:
        taken = other.execute("SELECT pg_try_advisory_lock(%s)", [key]).fetchone()[0]
        if taken:
            other.execute("SELECT pg_advisory_unlock(%s)", [key])
    return taken


def test_a_change_that_ends_the_run_holds_the_run_lock_until_it_commits():
    instance = started()
    key = runtime._run_lock_key(instance.pk)
    locked, loaded = runtime._lock_and_load(instance.pk)
    assert locked and loaded is not None
    with transaction.atomic():
        _finish_locked(loaded)
        # The session's hold is released by the statement, but its transaction still holds the
        # lock: no other runner can read the instance as it was before this change commits.
        assert runtime._run_locks().get(key, 0) == 0
        assert not _run_lock_free(key)
    assert _run_lock_free(key)
    assert _advisory_locks_of_my_session() == 0
    runtime._release_run_lock(instance.pk)  # nothing left to release: no statement, no error
    assert WorkflowInstance.objects.get(pk=instance.pk).status == "Finished"


def test_a_rolled_back_change_that_ends_the_run_leaves_no_run_lock_behind():
    instance = started()
    key = runtime._run_lock_key(instance.pk)
    _, loaded = runtime._lock_and_load(instance.pk)
    with pytest.raises(RuntimeError), transaction.atomic():
        _finish_locked(loaded)
        raise RuntimeError("a listener failed after the change")
    assert _run_lock_free(key)
    assert WorkflowInstance.objects.get(pk=instance.pk).status == "Running"


def test_a_stale_change_that_ends_the_run_keeps_the_run_lock_for_the_retry():
    instance = started()
    key = runtime._run_lock_key(instance.pk)
    _, loaded = runtime._lock_and_load(instance.pk)
    WorkflowInstance.objects.filter(pk=instance.pk).update(revision=loaded.revision + 1)  # someone else wrote
    with pytest.raises(runtime.StaleInstance), transaction.atomic():
        _finish_locked(loaded)
    assert runtime._run_locks().get(key, 0) == 1
    assert not _run_lock_free(key)
    runtime._release_run_lock(instance.pk)
    assert _run_lock_free(key)
    for events in (PendingAuditEvent.objects, AuditEvent.objects):
        assert not events.filter(resource_id=str(instance.pk), event_type="workflow.instance.finished").exists()


def test_a_run_lock_taken_twice_is_not_handed_over_by_the_inner_change():
    instance = started()
    key = runtime._run_lock_key(instance.pk)
    _, loaded = runtime._lock_and_load(instance.pk)
    runtime._lock_and_load(instance.pk)  # re-entrant: an eager task running the instance inside its own run
    with transaction.atomic():
        _finish_locked(loaded)
    assert runtime._run_locks().get(key, 0) == 2
    assert not _run_lock_free(key)
    runtime._release_run_lock(instance.pk)
    runtime._release_run_lock(instance.pk)
    assert _run_lock_free(key)


def test_a_suspending_run_leaves_no_run_lock_behind():
    instance = started(linear({"id": "wait", "type": "WaitForResume"}, {"id": "done", "type": "Finish"}))
    with CaptureQueriesContext(connection) as queries:
        runtime.run_instance(instance.pk)
    assert WorkflowInstance.objects.get(pk=instance.pk).status == "Suspended"
    assert not [sql for sql in _statements(queries) if sql.startswith("SELECT pg_advisory_unlock")]
    assert _advisory_locks_of_my_session() == 0


def test_no_index_covers_a_column_that_every_step_writes():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT a.attname FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = 'workflows_workflowinstance'::regclass"
        )
        indexed = {row[0] for row in cursor.fetchall()}
        cursor.execute(
            "SELECT string_agg(pg_get_expr(indpred, indrelid), ' ') FROM pg_index "
            "WHERE indrelid = 'workflows_workflowinstance'::regclass"
        )
        predicates = cursor.fetchone()[0] or ""
        cursor.execute("SELECT reloptions FROM pg_class WHERE oid = 'workflows_workflowinstance'::regclass")
        options = cursor.fetchone()[0]
    assert options == ["fillfactor=70"]  # room on each page for the updated row
    assert {"status", "created_at"} <= indexed
    # next_timer_at is written by every step too, but changes only when a timer is set or fires
    # (the timer sweep reads it through its index); an unchanged value does not prevent HOT.
    for column in set(runtime._STEP_COLUMNS) - {"next_timer_at"}:
        assert column not in indexed and column not in predicates, column


def test_a_step_updates_the_instance_row_in_place():
    instance = started(five_step_document(), {"amount": 5000})
    _, loaded = runtime._lock_and_load(instance.pk)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            runtime._step(instance.pk, loaded)  # SetVariable: a step that changes no status
            cursor.execute(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables "
                "WHERE relid = 'workflows_workflowinstance'::regclass"
            )
            # One UPDATE, heap-only: no index gained an entry for it.
            assert cursor.fetchone() == (1, 1)
    finally:
        runtime._release_run_lock(instance.pk)


@pytest.mark.parametrize("acts", [True, False])
def test_a_receiver_that_acts_for_the_instance_is_given_the_transaction_of_the_change(acts):
    instance = started(FINISH)
    seen = []

    def listener(sender, instance, actor, **kwargs):
        with other_session() as other:  # committed already?
            status = other.execute(
                "SELECT status FROM workflows_workflowinstance WHERE id = %s", [instance.pk]
            ).fetchone()[0]
        seen.append((connection.in_atomic_block, status))

    signals.instance_finished.connect(listener, when=lambda instance: acts)
    try:
        with CaptureQueriesContext(connection) as queries:
            runtime.run_instance(instance.pk)
    finally:
        signals.instance_finished.disconnect(listener)
    if acts:
        # Inside the change's transaction, which the other session cannot see yet.
        assert seen == [(True, "Running")]
        assert "BEGIN" in _statements(queries)
    else:
        # Sent after the change committed on its own (the receiver has nothing to do).
        assert seen == [(False, "Finished")]
        assert "BEGIN" not in _statements(queries)
    assert WorkflowInstance.objects.get(pk=instance.pk).status == "Finished"
    assert _advisory_locks_of_my_session() == 0


def test_a_lifecycle_signal_forgets_the_condition_of_a_disconnected_receiver():
    signal = signals.LifecycleSignal()
    instance = started(FINISH)
    assert not signal.acts_for(instance)

    def always(**kwargs):
        pass

    signal.connect(always)
    assert signal.acts_for(instance)  # no condition: it acts for every instance
    signal.disconnect(always)
    signal.connect(always, dispatch_uid="conditional", when=lambda instance: instance.status == "Faulted")
    assert not signal.acts_for(instance)
    signal.disconnect(dispatch_uid="conditional")
    assert not signal.acts_for(instance) and not signal.has_listeners()


def test_a_lifecycle_signal_ignores_a_receiver_that_was_garbage_collected():
    import gc

    signal = signals.LifecycleSignal()
    instance = started(FINISH)
    seen = []
    signal.connect(seen.append)  # weakly: a new bound method, gone at once
    gc.collect()
    assert not signal.acts_for(instance)

    class Listener:
        def __call__(self, **kwargs):
            pass

    listener = Listener()
    signal.connect(listener)
    assert signal.acts_for(instance)
    del listener
    gc.collect()
    assert not signal.acts_for(instance)


def test_the_lock_and_load_query_reuses_one_client_cursor_per_connection(monkeypatch):
    import elsa_site.db

    built = []

    class CountedClientCursor(psycopg.ClientCursor):
        def __init__(self, *args, **kwargs):
            built.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(elsa_site.db.psycopg, "ClientCursor", CountedClientCursor)
    first, second = started(), started()
    connection.close()
    for instance in (first, second, first):
        locked, loaded = runtime._lock_and_load(instance.pk)
        assert locked and loaded is not None and loaded.pk == instance.pk
        runtime._release_run_lock(instance.pk)
    assert len(built) == 1  # building a cursor copies the connection's adapters
    connection.close()
    runtime._lock_and_load(first.pk)
    runtime._release_run_lock(first.pk)
    assert len(built) == 2  # a new connection, a cursor of its own


def _fence(passes: bool) -> runtime.Fence:
    """A caller's fence whose check passes or not, with nothing of its own to write."""
    return runtime.Fence(
        check="ok", before="ok AS (SELECT WHERE %s)", before_params=[passes], after="", after_params=[], events=[]
    )


def _waiting_at_delay() -> WorkflowInstance:
    instance = started()
    runtime.run_instance(instance.pk)
    instance = WorkflowInstance.objects.get(pk=instance.pk)
    assert instance.status == "Suspended" and "wait" in instance.state["waiting"]
    _queued_run_ids()  # empty the queue
    return instance


def _resumed_events(instance) -> int:
    return chained_events().filter(event_type="workflow.instance.resumed", resource_id=str(instance.pk)).count()


def test_a_fenced_resume_is_one_statement_and_its_run_is_enqueued_after_it():
    instance = _waiting_at_delay()
    with CaptureQueriesContext(connection) as queries:
        resumed = workflow_instance_resume_fenced(
            instance=instance, activity_id="wait", output={"n": 1}, actor=ACTOR, fence=_fence(True)
        )
    assert resumed is instance
    statements = _statements(queries)
    assert len(statements) == 1 and statements[0].startswith("WITH ok AS (SELECT WHERE %s), upd AS (UPDATE"), statements
    saved = WorkflowInstance.objects.get(pk=instance.pk)
    assert (saved.status, saved.revision) == ("Running", instance.revision)
    assert "wait" not in saved.state["waiting"] and saved.next_timer_at is None
    assert saved.state["tokens"] == [{"a": "wait", "resume": {"outcome": "Done", "output": {"n": 1}}}]
    assert _resumed_events(instance) == 1
    assert _queued_run_ids() == [str(instance.pk)]
    runtime.run_instance(instance.pk)
    assert WorkflowInstance.objects.get(pk=instance.pk).status == "Finished"


@pytest.mark.parametrize("moved", ["check", "revision"])
def test_a_fenced_resume_that_finds_its_fence_or_the_instance_moved_on_writes_nothing(moved):
    instance = _waiting_at_delay()
    before = WorkflowInstance.objects.get(pk=instance.pk)
    if moved == "revision":
        with other_session(autocommit=True) as other:  # another change committed after the read
            other.execute("UPDATE workflows_workflowinstance SET revision = revision + 1 WHERE id = %s", [instance.pk])
    resumed = workflow_instance_resume_fenced(
        instance=instance, activity_id="wait", actor=ACTOR, fence=_fence(moved != "check")
    )
    assert resumed is None
    after = WorkflowInstance.objects.get(pk=instance.pk)
    assert (after.status, after.state) == ("Suspended", before.state)
    assert after.revision == before.revision + (moved == "revision")
    assert _resumed_events(instance) == 0 and _queued_run_ids() == []


def test_a_fenced_resume_is_left_to_the_transaction_when_a_listener_writes():
    instance = _waiting_at_delay()

    def listener(**kwargs):
        pass

    signals.instance_resumed.connect(listener)  # no condition: it acts for every instance
    try:
        with CaptureQueriesContext(connection) as queries:
            resumed = workflow_instance_resume_fenced(
                instance=instance, activity_id="wait", actor=ACTOR, fence=_fence(True)
            )
    finally:
        signals.instance_resumed.disconnect(listener)
    assert resumed is None and _statements(queries) == []
    assert WorkflowInstance.objects.get(pk=instance.pk).status == "Suspended"


def test_a_fenced_resume_refuses_what_the_locked_one_refuses():
    instance = _waiting_at_delay()
    with pytest.raises(Conflict, match="not waiting"):
        workflow_instance_resume_fenced(instance=instance, activity_id="done", actor=ACTOR, fence=_fence(True))
    with pytest.raises(InvalidInput, match="no such outcome"):
        workflow_instance_resume_fenced(
            instance=instance, activity_id="wait", outcome="Nope", actor=ACTOR, fence=_fence(True)
        )
    assert WorkflowInstance.objects.get(pk=instance.pk).status == "Suspended"
