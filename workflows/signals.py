"""Lifecycle hooks of workflow instances, sent inside the transaction of the change (see LifecycleSignal)."""

from collections.abc import Callable

from django.dispatch import Signal


class LifecycleSignal(Signal):
    """A lifecycle hook whose receivers can say for which instances they act.

    ``connect(receiver, ..., when=condition)``: ``condition(instance)`` tells whether the receiver
    writes anything for that instance. When no receiver of a change's signal acts for the instance,
    the engine saves the change (one statement with its audit event) without a transaction around
    it, and sends the signal after it has committed; a receiver whose condition is false must then
    do nothing. A receiver connected without ``when`` acts for every instance.
    """

    def __init__(self) -> None:
        super().__init__()
        self._conditions: dict[object, Callable | None] = {}

    @staticmethod
    def _key(receiver, dispatch_uid) -> object:
        if dispatch_uid:
            return dispatch_uid
        if hasattr(receiver, "__self__") and hasattr(receiver, "__func__"):
            return (id(receiver.__self__), id(receiver.__func__))
        return id(receiver)

    def connect(self, receiver, sender=None, weak=True, dispatch_uid=None, when: Callable | None = None) -> None:
        super().connect(receiver, sender=sender, weak=weak, dispatch_uid=dispatch_uid)
        self._conditions[self._key(receiver, dispatch_uid)] = when

    def disconnect(self, receiver=None, sender=None, dispatch_uid=None) -> bool:
        self._conditions.pop(self._key(receiver, dispatch_uid), None)
        return super().disconnect(receiver, sender=sender, dispatch_uid=dispatch_uid)

    def acts_for(self, instance) -> bool:
        """Whether a receiver may write for this instance (a receiver that was garbage-collected
        without being disconnected still counts: the safe side)."""
        return any(when is None or when(instance) for when in self._conditions.values())


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
# Cancelled, finished and faulted are terminal: listeners invalidate bookmarks and timers. They
# are LifecycleSignals: a change that no receiver acts for is saved without a transaction (one
# statement), and its signal is sent after that statement committed.
instance_cancelled = LifecycleSignal()
instance_finished = LifecycleSignal()
instance_faulted = LifecycleSignal()
