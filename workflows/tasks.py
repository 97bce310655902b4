"""Celery entry points of the runtime: run an instance, fire a timer, sweep for lost work."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

from workflows import runtime

_kept = threading.local()


@contextmanager
def engine_connection(task) -> Iterator[None]:
    """Run an engine task on this worker thread's long-lived database connection.

    Celery's Django fixup closes every connection before and after each task, whatever
    CONN_MAX_AGE says, so each run would open a new PostgreSQL connection: a server process, a
    time zone round trip, about 5 ms, longer than the whole run of a short workflow. The engine's
    tasks keep one connection instead and apply Django's own policy for a request to it: closed
    when older than CONN_MAX_AGE (0 closes it after every task) or broken, health-checked
    before reuse (CONN_HEALTH_CHECKS). After a task that raised it is closed, so no session
    advisory lock (the run lock) can outlive a failed run on a reused connection. A task run
    eagerly or called as a function uses the caller's connection (and its transaction).
    """
    if task.request.is_eager or task.request.called_directly:
        yield
        return
    kept = getattr(_kept, "connection", None)
    if kept is None:
        kept = _kept.connection = connections.create_connection(DEFAULT_DB_ALIAS)
    kept.close_if_unusable_or_obsolete()
    default = connections[DEFAULT_DB_ALIAS]
    connections[DEFAULT_DB_ALIAS] = kept
    succeeded = False
    try:
        yield
        succeeded = True
    finally:
        connections[DEFAULT_DB_ALIAS] = default
        if succeeded:
            kept.close_if_unusable_or_obsolete()
        else:
            kept.close()


class EngineTask(Task):
    """A run or timer task: time-limited, and an instance whose task overran is faulted.

    A runaway step (an expression evaluating for hours, a plug-in that never returns) must not
    pin a worker and the instance's run lock forever. The soft limit raises SoftTimeLimitExceeded
    in the task, which faults the instance; a step that cannot be interrupted (CEL evaluates in
    Rust, which never lets the signal handler run) is killed at the hard limit, after which the
    worker's parent process calls on_failure, which faults it. Either way the message is
    acknowledged and the sweep no longer re-runs the instance. A long but healthy run never gets
    there: it hands over to a fresh task between steps after half the soft limit.
    """

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        if isinstance(exc, TimeLimitExceeded) and args:
            runtime.fault_overrun(args[0], seconds=settings.ELSA_WORKFLOW_RUN_TIME_LIMIT)


def _engine_task(name: str):
    # acks_late + reject_on_worker_lost: a worker killed mid-run leaves the message unacknowledged,
    # so the broker delivers it again after the visibility timeout; the step that was in flight
    # rolled back with the dead connection, so the next run continues from the last committed step.
    return shared_task(
        bind=True,
        base=EngineTask,
        name=name,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        soft_time_limit=settings.ELSA_WORKFLOW_RUN_SOFT_TIME_LIMIT,
        time_limit=settings.ELSA_WORKFLOW_RUN_TIME_LIMIT,
    )


def _fault_at_soft_limit(instance_id: str) -> None:
    # engine_connection closed the connection, which released the run lock with it.
    runtime.fault_overrun(
        instance_id, seconds=settings.ELSA_WORKFLOW_RUN_SOFT_TIME_LIMIT, setting="ELSA_WORKFLOW_RUN_SOFT_TIME_LIMIT"
    )


def _hand_over_at() -> float:
    return time.monotonic() + settings.ELSA_WORKFLOW_RUN_SOFT_TIME_LIMIT / 2


@_engine_task(runtime.RUN_TASK)
def run_instance(self, instance_id: str) -> int:
    hand_over_at = _hand_over_at()
    try:
        with engine_connection(self):
            return runtime.run_instance(instance_id, hand_over_at=hand_over_at)
    except SoftTimeLimitExceeded:
        _fault_at_soft_limit(instance_id)
        return 0


@_engine_task(runtime.TIMER_TASK)
def fire_timer(self, instance_id: str, activity_id: str, timer_id: str) -> bool:
    hand_over_at = _hand_over_at()
    try:
        with engine_connection(self):
            fired = runtime.fire_timer(instance_id, activity_id, timer_id)
            if fired:
                # Continue in this task rather than waiting for the queued run: one less round trip.
                runtime.run_instance(instance_id, hand_over_at=hand_over_at)
            return fired
    except SoftTimeLimitExceeded:
        _fault_at_soft_limit(instance_id)
        return True


@shared_task(name="workflows.sweep", ignore_result=True)
def sweep() -> dict:
    """Periodic (beat): fire due timers whose ETA task was lost, re-enqueue stalled Running instances."""
    return {"timers": runtime.sweep_due_timers(), "stalled": runtime.sweep_stalled_instances()}
