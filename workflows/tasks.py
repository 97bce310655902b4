"""Celery entry points of the runtime: run an instance, fire a timer, sweep for lost work."""

from celery import shared_task

from workflows import runtime


# acks_late + reject_on_worker_lost: a worker killed mid-run leaves the message unacknowledged,
# so the broker delivers it again after the visibility timeout; the step that was in flight
# rolled back with the dead connection, so the next run continues from the last committed step.
@shared_task(name=runtime.RUN_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_instance(instance_id: str) -> int:
    return runtime.run_instance(instance_id)


@shared_task(name=runtime.TIMER_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def fire_timer(instance_id: str, activity_id: str, timer_id: str) -> bool:
    fired = runtime.fire_timer(instance_id, activity_id, timer_id)
    if fired:
        # Continue in this task rather than waiting for the queued run: one less round trip.
        runtime.run_instance(instance_id)
    return fired


@shared_task(name="workflows.sweep", ignore_result=True)
def sweep() -> dict:
    """Periodic (beat): fire due timers whose ETA task was lost, re-enqueue stalled Running instances."""
    return {"timers": runtime.sweep_due_timers(), "stalled": runtime.sweep_stalled_instances()}
