"""Celery entry points of the runtime: run an instance, fire a timer, sweep for lost work."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from celery import shared_task
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


# acks_late + reject_on_worker_lost: a worker killed mid-run leaves the message unacknowledged,
# so the broker delivers it again after the visibility timeout; the step that was in flight
# rolled back with the dead connection, so the next run continues from the last committed step.
@shared_task(bind=True, name=runtime.RUN_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_instance(self, instance_id: str) -> int:
    with engine_connection(self):
        return runtime.run_instance(instance_id)


@shared_task(bind=True, name=runtime.TIMER_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def fire_timer(self, instance_id: str, activity_id: str, timer_id: str) -> bool:
    with engine_connection(self):
        fired = runtime.fire_timer(instance_id, activity_id, timer_id)
        if fired:
            # Continue in this task rather than waiting for the queued run: one less round trip.
            runtime.run_instance(instance_id)
        return fired


@shared_task(name="workflows.sweep", ignore_result=True)
def sweep() -> dict:
    """Periodic (beat): fire due timers whose ETA task was lost, re-enqueue stalled Running instances."""
    return {"timers": runtime.sweep_due_timers(), "stalled": runtime.sweep_stalled_instances()}
