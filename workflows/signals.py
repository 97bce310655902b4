"""Lifecycle hooks of workflow instances, sent inside the transaction of the change (see LifecycleSignal)."""

import weakref
from collections.abc import Callable

from django.dispatch import Signal
from django.dispatch.dispatcher import _make_id


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
        # Django's lookup key of each receiver -> its condition (None: every instance).
        self._conditions: dict[tuple, Callable | None] = {}

    def connect(self, receiver, sender=None, weak=True, dispatch_uid=None, when: Callable | None = None) -> None:
        super().connect(receiver, sender=sender, weak=weak, dispatch_uid=dispatch_uid)
        self._conditions[_lookup_key(receiver, sender, dispatch_uid)] = when

    def disconnect(self, receiver=None, sender=None, dispatch_uid=None) -> bool:
        self._conditions.pop(_lookup_key(receiver, sender, dispatch_uid), None)
        return super().disconnect(receiver, sender=sender, dispatch_uid=dispatch_uid)

    def acts_for(self, instance) -> bool:
        """Whether a connected, live receiver may write for this instance."""
        for lookup_key, reference, *_ in self.receivers:
            if isinstance(reference, weakref.ReferenceType) and reference() is None:
                continue  # a weakly connected receiver that was garbage-collected
            when = self._conditions.get(lookup_key)
            if when is None or when(instance):
                return True
        return False


def _lookup_key(receiver, sender, dispatch_uid) -> tuple:
    # The key Signal.connect files a receiver under (and Signal.receivers lists it by).
    return (dispatch_uid or _make_id(receiver), _make_id(sender))


# Every signal is sent with sender=WorkflowInstance and the keyword arguments instance=<the
# WorkflowInstance after the change> and actor=<audit.actors.Actor>, from inside the database
# transaction that makes the change: a receiver's writes commit or roll back with it, and a
# receiver that raises aborts the change (fail closed).
#
# instance_suspended also carries activity_id=<the suspending activity> and data=<Suspend.data>;
# it is sent for every activity that suspends (also while other branches keep the instance
# Running), so a listener can create its bookmark right away.
instance_suspended = Signal()
# instance_resumed carries activity_id and outcome of the resumed activity. A LifecycleSignal: a
# fenced resume (services.workflow_instance_resume_fenced, one statement without a transaction) is
# only made when no receiver acts for the instance, and then sends it after the statement committed.
instance_resumed = LifecycleSignal()
# Cancelled, finished and faulted are terminal: listeners invalidate bookmarks and timers. They
# are LifecycleSignals: a change that no receiver acts for is saved without a transaction (one
# statement), and its signal is sent after that statement committed.
instance_cancelled = LifecycleSignal()
instance_finished = LifecycleSignal()
instance_faulted = LifecycleSignal()
