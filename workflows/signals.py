"""Lifecycle hooks of workflow instances, sent inside the transaction of the change."""

from django.dispatch import Signal

# Every signal is sent with sender=WorkflowInstance and the keyword arguments instance=<the
# WorkflowInstance after the change> and actor=<audit.actors.Actor>, from inside the database
# transaction that makes the change: a receiver's writes commit or roll back with it, and a
# receiver that raises aborts the change (fail closed).
#
# instance_suspended also carries activity_id=<the suspending activity> and data=<Suspend.data>;
# it is sent for every activity that suspends (also while other branches keep the instance
# Running), so a listener can create its bookmark right away.
instance_suspended = Signal()
# instance_resumed carries activity_id and outcome of the resumed activity.
instance_resumed = Signal()
# Cancelled, finished and faulted are terminal: listeners invalidate bookmarks and timers.
instance_cancelled = Signal()
instance_finished = Signal()
instance_faulted = Signal()
