"""The runtime run in-process: steps, branches, joins, faults, the step cap (no worker needed)."""

import logging
import threading
import time

import pytest
from django.core import mail
from django.db import connection

from elsa_site.errors import Conflict, InvalidInput
from tests.audit_log import chained_events
from tests.conftest import wait_until
from tests.workflows.factories import ACTOR, five_step_document, linear, published
from workflows import runtime, signals
from workflows.activities.base import _REGISTRY, Activity, Done, Reschedule, register_activity
from workflows.models import ActivityExecution, WorkflowInstance
from workflows.services import workflow_definition_execute, workflow_instance_cancel, workflow_instance_resume

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def runs_stay_in_this_process(settings):
    """Send the engine's tasks to a queue no worker consumes: these tests drive the runtime themselves."""
    from elsa_site.celery import app

    settings.ELSA_WORKFLOW_QUEUE = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-unconsumed"
    yield
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(settings.ELSA_WORKFLOW_QUEUE)


def run(document, input=None):
    definition = published(document)
    instance = workflow_definition_execute(definition=definition, input=input or {}, actor=ACTOR)
    runtime.run_instance(instance.pk)
    return WorkflowInstance.objects.get(pk=instance.pk)


def executed(instance) -> list[str]:
    return list(
        ActivityExecution.objects.filter(instance=instance).order_by("id").values_list("activity_id", flat=True)
    )


def test_five_step_workflow_finishes_with_one_execution_per_activity():
    instance = run(five_step_document(), {"amount": 5000})
    assert instance.status == "Finished"
    assert instance.variables == {"amount": 5000, "label": "big"}
    assert executed(instance) == ["set", "big", "label", "log", "done"]


def test_if_false_branch_skips_the_true_branch():
    instance = run(five_step_document(), {"amount": 5})
    assert instance.status == "Finished"
    assert executed(instance) == ["set", "big", "log", "done"]


def test_switch_takes_the_first_matching_case_else_default():
    document = linear(
        {
            "id": "route",
            "type": "Switch",
            "cases": [{"name": "small", "condition": "input.n < 10"}, {"name": "medium", "condition": "input.n < 100"}],
        },
        {"id": "s", "type": "SetVariable", "variable": "size", "value": "'small'"},
        {"id": "m", "type": "SetVariable", "variable": "size", "value": "'medium'"},
        {"id": "l", "type": "SetVariable", "variable": "size", "value": "'large'"},
        name="switch",
        variables=[{"name": "size"}],
        connections=[
            {"source": "route", "outcome": "small", "target": "s"},
            {"source": "route", "outcome": "medium", "target": "m"},
            {"source": "route", "outcome": "Default", "target": "l"},
        ],
    )
    assert run(document, {"n": 50}).variables == {"size": "medium"}
    assert run(document, {"n": 5000}).variables == {"size": "large"}


def loop_document() -> dict:
    return linear(
        {"id": "inc", "type": "SetVariable", "variable": "n", "value": "(has(vars.n) ? vars.n : 0) + 1"},
        {"id": "again", "type": "If", "condition": "true"},
        name="endless",
        variables=[{"name": "n"}],
        connections=[
            {"source": "inc", "target": "again"},
            {"source": "again", "outcome": "True", "target": "inc"},
        ],
    )


def queued_runs(settings) -> int:
    from elsa_site.celery import app

    with app.connection_for_write() as conn:
        return conn.default_channel.queue_declare(settings.ELSA_WORKFLOW_QUEUE, passive=True).message_count


def test_a_run_past_its_time_slice_hands_over_to_a_fresh_task(settings):
    steps = [{"id": f"s{i}", "type": "SetVariable", "variable": "n", "value": f"{i}"} for i in range(3)]
    definition = published(linear(*steps, variables=[{"name": "n"}]))
    instance = workflow_definition_execute(definition=definition, input={}, actor=ACTOR)
    queued = queued_runs(settings)
    # Already past its slice: the run takes one step, then enqueues itself again and returns.
    assert runtime.run_instance(instance.pk, hand_over_at=time.monotonic()) == 1
    assert queued_runs(settings) == queued + 1
    assert WorkflowInstance.objects.get(pk=instance.pk).status == "Running"
    runtime.run_instance(instance.pk)
    assert executed(WorkflowInstance.objects.get(pk=instance.pk, status="Finished")) == ["s0", "s1", "s2"]


COUNT = {"id": "inc", "type": "SetVariable", "variable": "n", "value": "(has(vars.n) ? vars.n : 0) + 1"}


def test_join_any_as_the_merge_point_of_a_loop_runs_on_every_round():
    document = linear(
        {"id": "begin", "type": "Fork"},
        {"id": "merge", "type": "Join", "mode": "any"},
        COUNT,
        {"id": "more", "type": "If", "condition": "vars.n < 3"},
        variables=[{"name": "n"}],
        connections=[
            {"source": "begin", "target": "merge"},
            {"source": "merge", "target": "inc"},
            {"source": "inc", "target": "more"},
            {"source": "more", "outcome": "True", "target": "merge"},
        ],
    )
    instance = run(document)
    assert instance.status == "Finished"
    assert instance.variables == {"n": 3}
    assert executed(instance).count("merge") == 3


def test_join_any_in_a_loop_runs_again_when_a_branch_never_reaches_it():
    document = linear(
        {"id": "begin", "type": "Fork"},
        {"id": "fork", "type": "Fork"},
        {"id": "a", "type": "WriteLog", "message": "'a'"},
        {"id": "b", "type": "If", "condition": "false"},
        {"id": "join", "type": "Join", "mode": "any"},
        COUNT,
        {"id": "more", "type": "If", "condition": "vars.n < 3"},
        variables=[{"name": "n"}],
        connections=[
            {"source": "begin", "target": "fork"},
            {"source": "fork", "target": "a"},
            {"source": "fork", "target": "b"},
            {"source": "a", "target": "join"},
            {"source": "b", "outcome": "True", "target": "join"},
            {"source": "join", "target": "inc"},
            {"source": "inc", "target": "more"},
            {"source": "more", "outcome": "True", "target": "fork"},
        ],
    )
    instance = run(document)
    assert instance.status == "Finished"
    assert instance.variables == {"n": 3}


def test_join_any_loop_rounds_survive_a_wait_and_its_resume():
    document = linear(
        {"id": "begin", "type": "Fork"},
        {"id": "merge", "type": "Join", "mode": "any"},
        COUNT,
        {"id": "wait", "type": "Delay", "seconds": 3600},
        {"id": "more", "type": "If", "condition": "vars.n < 2"},
        variables=[{"name": "n"}],
        connections=[
            {"source": "begin", "target": "merge"},
            {"source": "merge", "target": "inc"},
            {"source": "inc", "target": "wait"},
            {"source": "wait", "target": "more"},
            {"source": "more", "outcome": "True", "target": "merge"},
        ],
    )
    instance = run(document)
    for _ in range(2):
        assert instance.status == "Suspended"
        workflow_instance_resume(instance=instance, activity_id="wait", actor=ACTOR)
        runtime.run_instance(instance.pk)
        instance = WorkflowInstance.objects.get(pk=instance.pk)
    assert instance.status == "Finished"
    assert instance.variables == {"n": 2}


def test_join_any_in_a_loop_absorbs_the_slower_branch_of_each_round():
    # The slow branch arrives after its round's Join ran (and after the loop went round): absorbed.
    slow = [{"id": f"b{i}", "type": "WriteLog", "message": f"'b{i}'"} for i in range(3)]
    document = linear(
        {"id": "begin", "type": "Fork"},
        {"id": "fork", "type": "Fork"},
        {"id": "a", "type": "WriteLog", "message": "'a'"},
        *slow,
        {"id": "join", "type": "Join", "mode": "any"},
        COUNT,
        {"id": "more", "type": "If", "condition": "vars.n < 3"},
        variables=[{"name": "n"}],
        connections=[
            {"source": "begin", "target": "fork"},
            {"source": "fork", "target": "a"},
            {"source": "fork", "target": "b0"},
            {"source": "b0", "target": "b1"},
            {"source": "b1", "target": "b2"},
            {"source": "a", "target": "join"},
            {"source": "b2", "target": "join"},
            {"source": "join", "target": "inc"},
            {"source": "inc", "target": "more"},
            {"source": "more", "outcome": "True", "target": "fork"},
        ],
    )
    instance = run(document)
    assert instance.status == "Finished"
    assert instance.variables == {"n": 3}
    assert executed(instance).count("join") == 3 and executed(instance).count("b2") == 3


def test_endless_loop_is_faulted_at_the_step_cap(settings):
    settings.ELSA_WORKFLOW_MAX_STEPS = 20
    # The loop has no start activity without an incoming edge unless one is added in front.
    document = loop_document()
    document["activities"].insert(0, {"id": "start", "type": "Fork"})
    document["connections"].insert(0, {"source": "start", "target": "inc"})
    instance = run(document)
    assert instance.status == "Faulted"
    assert "limit of 20 steps" in instance.fault_message and "ELSA_WORKFLOW_MAX_STEPS" in instance.fault_message
    assert instance.step_count == 20


def test_failing_activity_faults_with_its_id_and_writes_nothing_half_done():
    @register_activity
    class Explodes(Activity):
        type_name = "TestExplodes"

        def execute(self, ctx):
            ctx.set_variable("x", "half-written")
            raise RuntimeError("the partner API is down")

    document = linear(
        {"id": "first", "type": "SetVariable", "variable": "x", "value": "'ok'"},
        {"id": "bad", "type": "TestExplodes"},
        {"id": "never", "type": "Finish"},
        variables=[{"name": "x"}],
    )
    instance = run(document)
    assert instance.status == "Faulted" and instance.fault_activity_id == "bad"
    assert instance.fault_message == "activity 'bad' (TestExplodes) failed: RuntimeError: the partner API is down"
    assert instance.variables == {"x": "ok"}
    assert [(e.activity_id, e.status) for e in ActivityExecution.objects.filter(instance=instance).order_by("id")] == [
        ("first", "Completed"),
        ("bad", "Faulted"),
    ]


def test_reschedule_runs_the_activity_again_with_the_next_attempt():
    @register_activity
    class Flaky(Activity):
        type_name = "TestFlaky"

        def execute(self, ctx):
            if ctx.attempt < 2:
                return Reschedule(countdown=30, reason=f"attempt {ctx.attempt} failed")
            return Done(output={"attempts": ctx.attempt + 1})

    instance = run(linear({"id": "call", "type": "TestFlaky"}, {"id": "done", "type": "Finish"}))
    for _ in range(2):
        assert instance.status == "Running" and "call" in instance.state["waiting"]
        entry = instance.state["waiting"]["call"]
        assert runtime.fire_timer(instance.pk, "call", entry["timer"]) is True
        assert runtime.fire_timer(instance.pk, "call", entry["timer"]) is False  # a duplicate firing is a no-op
        runtime.run_instance(instance.pk)
        instance.refresh_from_db()
    assert instance.status == "Finished"
    assert instance.outputs == {"call": {"attempts": 3}}
    records = ActivityExecution.objects.filter(instance=instance, activity_id="call").order_by("id")
    assert [(r.status, r.attempt, r.error) for r in records] == [
        ("Rescheduled", 0, "attempt 0 failed"),
        ("Rescheduled", 1, "attempt 1 failed"),
        ("Completed", 2, ""),
    ]


def test_resume_completes_the_waiting_activity_with_its_outcome_and_output():
    document = linear(
        {"id": "wait", "type": "Delay", "seconds": 3600},
        {"id": "after", "type": "SetVariable", "variable": "seen", "value": "outputs.wait.answer"},
        variables=[{"name": "seen"}],
    )
    instance = run(document)
    assert instance.status == "Suspended"
    received = []
    signals.instance_resumed.connect(lambda **kw: received.append(kw["activity_id"]), weak=False, dispatch_uid="t")
    try:
        workflow_instance_resume(instance=instance, activity_id="wait", output={"answer": 42}, actor=ACTOR)
    finally:
        signals.instance_resumed.disconnect(dispatch_uid="t")
    assert received == ["wait"]
    runtime.run_instance(instance.pk)
    instance.refresh_from_db()
    assert instance.status == "Finished" and instance.variables == {"seen": 42}
    assert [(e.activity_id, e.status) for e in ActivityExecution.objects.filter(instance=instance).order_by("id")] == [
        ("wait", "Completed"),
        ("after", "Completed"),
    ]
    with pytest.raises(Conflict):
        workflow_instance_resume(instance=instance, activity_id="wait", actor=ACTOR)


def test_resume_with_an_unknown_outcome_is_refused():
    instance = run(linear({"id": "wait", "type": "Delay", "seconds": 3600}, {"id": "done", "type": "Finish"}))
    with pytest.raises(InvalidInput):
        workflow_instance_resume(instance=instance, activity_id="wait", outcome="Maybe", actor=ACTOR)


def test_lifecycle_is_audited_and_signalled_in_order():
    seen = []
    for name in ("instance_suspended", "instance_resumed", "instance_finished"):
        getattr(signals, name).connect(
            lambda name=name, **kw: seen.append(name), weak=False, dispatch_uid=f"test-{name}"
        )
    try:
        instance = run(linear({"id": "wait", "type": "Delay", "seconds": 3600}, {"id": "done", "type": "Finish"}))
        workflow_instance_resume(instance=instance, activity_id="wait", actor=ACTOR)
        runtime.run_instance(instance.pk)
    finally:
        for name in ("instance_suspended", "instance_resumed", "instance_finished"):
            getattr(signals, name).disconnect(dispatch_uid=f"test-{name}")
    assert seen == ["instance_suspended", "instance_resumed", "instance_finished"]
    events = list(
        chained_events()
        .filter(resource_type="workflow-instance", resource_id=str(instance.pk))
        .order_by("id")
        .values_list("event_type", "actor_type")
    )
    assert events == [
        ("workflow.instance.started", "user"),
        ("workflow.instance.suspended", "system"),
        ("workflow.instance.resumed", "user"),
        ("workflow.instance.finished", "system"),
    ]


def test_illegal_transitions_are_refused():
    instance = run(five_step_document(), {"amount": 1})
    with pytest.raises(Conflict):
        workflow_instance_cancel(instance=instance, actor=ACTOR)
    with pytest.raises(Conflict):
        instance.check_transition("Running")


def test_write_log_scrubs_secret_values(caplog):
    document = linear(
        {"id": "log", "type": "WriteLog", "message": "'key=' + vars.api_key", "level": "warning"},
        variables=[{"name": "api_key", "secret": True}],
    )
    with caplog.at_level(logging.INFO, logger="elsa.workflow"):
        run(document, {"api_key": "sk-live-0123456789"})
    messages = [r.getMessage() for r in caplog.records if r.name == "elsa.workflow"]
    assert messages == ["key=****"]
    assert "sk-live-0123456789" not in caplog.text


def test_a_long_secret_quoted_by_a_failing_expression_is_scrubbed_whole():
    secret = "tok_" + "".join(f"{i:04d}" for i in range(150))  # 604 characters, like a long JWT
    document = linear(
        {"id": "lookup", "type": "SetVariable", "variable": "x", "value": "{'a': 1}[vars.token]"},
        variables=[{"name": "x"}, {"name": "token", "secret": True}],
    )
    instance = run(document, {"token": secret})
    assert instance.status == "Faulted"
    assert instance.fault_message.startswith("activity 'lookup' (SetVariable): expression")
    assert "****" in instance.fault_message
    record = ActivityExecution.objects.get(instance=instance, activity_id="lookup")
    event = chained_events().get(event_type="workflow.instance.faulted", resource_id=str(instance.pk))
    for text in (instance.fault_message, record.error, str(event.metadata)):
        assert secret[:8] not in text and secret[-8:] not in text


SPECIAL_SECRET = 'corp\\svc-"deploy"\n2024-é'  # a backslash, quotes, a newline, a non-ASCII letter


@pytest.mark.parametrize(
    "activity",
    [
        {"id": "act", "type": "SetVariable", "variable": "x", "value": "{'a': 1}[vars.pw]"},  # KeyError: repr
        {"id": "act", "type": "Fault", "message": "['refused', vars.pw]"},
        {"id": "act", "type": "Fault", "message": "duration(vars.pw)"},  # CEL quotes the input Rust-style
    ],
)
def test_a_secret_in_escaped_form_is_scrubbed_from_the_fault(activity):
    instance = run(linear(activity, variables=[{"name": "x"}, {"name": "pw", "secret": True}]), {"pw": SPECIAL_SECRET})
    assert instance.status == "Faulted"
    assert "svc-" not in instance.fault_message and "deploy" not in instance.fault_message
    assert "****" in instance.fault_message


def test_a_secret_in_escaped_form_is_scrubbed_from_log_lines_and_emails(caplog, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    document = linear(
        {"id": "log", "type": "WriteLog", "message": "['deploy', vars.pw, {'pw': vars.pw}]"},
        {"id": "mail", "type": "SendEmail", "to": "'ops@example.com'", "subject": "[vars.pw]", "body": "[vars.pw]"},
        variables=[{"name": "pw", "secret": True}],
    )
    with caplog.at_level(logging.INFO, logger="elsa.workflow"):
        instance = run(document, {"pw": SPECIAL_SECRET})
    assert instance.status == "Finished"
    lines = [r.getMessage() for r in caplog.records if r.name == "elsa.workflow"]
    assert lines == ["['deploy', '****', {'pw': '****'}]"]
    assert [(m.subject, m.body) for m in mail.outbox] == [("['****']", "['****']")]


def test_a_numeric_secret_converted_by_an_expression_is_still_masked(caplog):
    document = linear(
        {"id": "copy", "type": "SetVariable", "variable": "n", "value": "double(vars.pin)"},
        {"id": "log", "type": "WriteLog", "message": "[double(vars.pin)]"},
        variables=[{"name": "n"}, {"name": "pin", "secret": True}],
    )
    with caplog.at_level(logging.INFO, logger="elsa.workflow"):
        instance = run(document, {"pin": "982451"})
    assert instance.variables == {"n": "****"}
    assert "982451" not in caplog.text


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("1.0/0.0", "is not a finite number"),
        ("double('nan')", "is not a finite number"),
        ("{'a': [1, -1.0/0.0]}", "at /a/1 is not a finite number"),
        ("'a\\x00b'", "contains a NUL character"),
        ("{'a\\x00': 1}", "has a property name with a NUL character"),
    ],
)
def test_a_value_the_database_cannot_store_faults_the_step_naming_the_activity(value, problem):
    document = linear(
        {"id": "calc", "type": "SetVariable", "variable": "x", "value": value},
        {"id": "done", "type": "Finish"},
        variables=[{"name": "x"}],
    )
    instance = run(document)
    assert instance.status == "Faulted"
    assert instance.fault_message.startswith("activity 'calc' (SetVariable): the value of variable 'x'")
    assert problem in instance.fault_message
    assert instance.variables == {}
    assert executed(instance) == ["calc"]


def test_a_fault_message_with_a_nul_character_is_stored_escaped():
    instance = run(linear({"id": "stop", "type": "Fault", "message": "'bad\\x00news'"}))
    assert instance.status == "Faulted"
    assert instance.fault_message == "activity 'stop' (Fault): bad\\u0000news"


def test_a_step_the_database_refuses_to_store_faults_instead_of_failing_every_run():
    @register_activity
    class LongOutcome(Activity):
        type_name = "TestLongOutcome"
        uses_database = False

        def execute(self, ctx):
            return Done("x" * 300)  # longer than the execution record's outcome column

    try:
        definition = published(linear({"id": "odd", "type": "TestLongOutcome"}))
        instance = workflow_definition_execute(definition=definition, input={}, actor=ACTOR)
        runtime.run_instance(instance.pk)
    finally:
        _REGISTRY.pop("TestLongOutcome")
    instance.refresh_from_db()
    assert instance.status == "Faulted"
    assert instance.fault_message == (
        "activity 'odd' (TestLongOutcome): the database refused to store its result (DataError)"
    )
    assert instance.state["tokens"] == []


def test_two_runners_at_once_execute_each_activity_once():
    steps = [{"id": f"s{i}", "type": "SetVariable", "variable": "n", "value": f"{i}"} for i in range(40)]
    definition = published(linear(*steps, variables=[{"name": "n"}]))
    instance = workflow_definition_execute(definition=definition, input={}, actor=ACTOR)
    barrier = threading.Barrier(3)

    def runner():
        barrier.wait()
        try:
            runtime.run_instance(instance.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=runner) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    runtime.run_instance(instance.pk)
    instance.refresh_from_db()
    assert instance.status == "Finished"
    ids = list(ActivityExecution.objects.filter(instance=instance).values_list("activity_id", flat=True))
    assert sorted(ids) == sorted(f"s{i}" for i in range(40))


def resume_is_waiting_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        # Asked inside the step's transaction, which would otherwise keep its first snapshot of the view.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


def test_a_resume_during_an_email_waits_for_the_step_and_the_email_is_sent_once(settings, monkeypatch):
    from workflows.activities import core

    document = linear(
        {"id": "fork", "type": "Fork"},
        {"id": "wait", "type": "Delay", "seconds": 3600},
        {"id": "notify", "type": "SendEmail", "to": "'ops@example.com'", "subject": "'hi'", "body": "'once'"},
        name="fork-mail",
        connections=[{"source": "fork", "target": "wait"}, {"source": "fork", "target": "notify"}],
    )
    instance = workflow_definition_execute(definition=published(document), input={}, actor=ACTOR)
    real_send_mail, resumes = core.send_mail, []

    def resume_waiting_branch():
        try:
            current = WorkflowInstance.objects.get(pk=instance.pk)
            workflow_instance_resume(instance=current, activity_id="wait", actor=ACTOR)
        finally:
            connection.close()

    def send_mail_while_the_other_branch_resumes(*args, **kwargs):
        # The other branch is resumed (a real concurrent commit) while the e-mail is being sent.
        if not resumes:
            resumes.append(threading.Thread(target=resume_waiting_branch))
            resumes[0].start()
            wait_until(lambda: not resumes[0].is_alive() or resume_is_waiting_for_a_lock(), message="the resume to run")
        return real_send_mail(*args, **kwargs)

    monkeypatch.setattr(core, "send_mail", send_mail_while_the_other_branch_resumes)
    runtime.run_instance(instance.pk)
    resumes[0].join()
    runtime.run_instance(instance.pk)  # the resumed branch (its run was enqueued to a queue nobody reads)
    instance.refresh_from_db()
    assert instance.fault_message == ""
    assert [m.body for m in mail.outbox] == ["once"]
    assert instance.status == "Finished"
    assert sorted(executed(instance)) == ["fork", "notify", "wait"]


def test_cancel_during_a_run_wins_over_the_step_in_flight():
    document = linear(
        {"id": "a", "type": "SetVariable", "variable": "n", "value": "1"},
        {"id": "b", "type": "SetVariable", "variable": "n", "value": "2"},
        variables=[{"name": "n"}],
    )
    instance = workflow_definition_execute(definition=published(document), input={}, actor=ACTOR)
    stale = WorkflowInstance.objects.get(pk=instance.pk)
    workflow_instance_cancel(instance=instance, actor=ACTOR)
    # A runner holding the pre-cancel snapshot: its fenced write is refused and nothing is recorded.
    with pytest.raises(runtime.StaleInstance):
        runtime.advance(stale, runtime.graph_of(stale.definition_version_id), stale.updated_at)
    runtime.run_instance(instance.pk)
    assert WorkflowInstance.objects.get(pk=instance.pk).status == "Cancelled"
    assert not ActivityExecution.objects.filter(instance=instance).exists()


def test_activity_type_unregistered_after_publishing_faults_the_instance():
    @register_activity
    class Vanishing(Activity):
        type_name = "TestVanishing"

        def execute(self, ctx):
            return Done()

    definition = published(linear({"id": "gone", "type": "TestVanishing"}))
    _REGISTRY.pop("TestVanishing")
    instance = workflow_definition_execute(definition=definition, input={}, actor=ACTOR)
    runtime.run_instance(instance.pk)
    instance.refresh_from_db()
    assert instance.status == "Faulted"
    assert instance.fault_message == "activity 'gone' has the unknown type 'TestVanishing'"


def test_started_instance_is_stored_exactly_as_built():
    document = linear(
        {"id": "done", "type": "Finish"},
        variables=[{"name": "amount"}, {"name": "token", "secret": True}],
    )
    started = workflow_definition_execute(
        definition=published(document), input={"amount": 7, "token": "s3cret-value", "note": None}, actor=ACTOR
    )
    stored = WorkflowInstance.objects.get(pk=started.pk)
    for field in WorkflowInstance._meta.concrete_fields:
        assert getattr(stored, field.attname) == getattr(started, field.attname), field.name
    assert stored.input == {"amount": 7, "token": "****", "note": None}
    assert set(stored.secret_variables) == {"token"} and "s3cret" not in stored.secret_variables["token"]
    assert not started._state.adding  # stored: a later save() updates the row


def test_suspending_step_records_an_execution_with_no_finish_time_yet():
    instance = run(linear({"id": "wait", "type": "Delay", "seconds": 3600}, {"id": "done", "type": "Finish"}))
    assert instance.status == "Suspended" and instance.next_timer_at is not None
    record = ActivityExecution.objects.get(instance=instance)
    assert (record.activity_id, record.status, record.attempt, record.finished_at, record.output, record.outcome) == (
        "wait",
        "Suspended",
        0,
        None,
        None,
        "",
    )


def test_executions_are_found_by_instance_through_the_activity_index():
    # The foreign key has no index of its own (one write less per activity run): the
    # (instance_id, activity_id) index serves lookups by instance.
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", [ActivityExecution._meta.db_table])
        by_instance = [row[0] for row in cursor.fetchall() if "(instance_id" in row[0]]
    assert len(by_instance) == 1 and "(instance_id, activity_id)" in by_instance[0]
