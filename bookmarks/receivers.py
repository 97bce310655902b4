"""Listeners to the engine's lifecycle hooks: a stopped instance leaves no live bookmark behind."""

from django.dispatch import receiver

from bookmarks.activities import WaitForResume
from bookmarks.services import bookmarks_consume_resumed, bookmarks_invalidate, may_consume_resumed
from workflows.runtime import graph_of
from workflows.signals import instance_cancelled, instance_faulted, instance_finished, instance_resumed

# The activity types that create bookmarks (bookmark_create is called by WaitForResume only).
BOOKMARKING_TYPES = frozenset({WaitForResume.type_name})


def _may_have_bookmarks(instance) -> bool:
    """Whether the instance's definition version has an activity that creates bookmarks.

    Most workflows never wait: their instances cannot have a bookmark, and finishing them skips
    the invalidation statement (the version's graph is cached, so this costs no query).
    """
    nodes = graph_of(instance.definition_version_id).nodes.values()
    return any(node.get("type") in BOOKMARKING_TYPES for node in nodes)


# Sent inside the engine's transaction: the invalidation and its audit events commit with the change.
# `when`: for an instance whose version cannot have bookmarks, these receivers do nothing, and the
# engine saves the change without a transaction (workflows.signals.LifecycleSignal).
@receiver(instance_cancelled, dispatch_uid="bookmarks.invalidate_on_cancel", when=_may_have_bookmarks)
def _invalidate_on_cancel(sender, instance, actor, **kwargs):
    if _may_have_bookmarks(instance):
        bookmarks_invalidate(instance=instance, reason="instance_cancelled", actor=actor)


@receiver(instance_finished, dispatch_uid="bookmarks.invalidate_on_finish", when=_may_have_bookmarks)
def _invalidate_on_finish(sender, instance, actor, **kwargs):
    if _may_have_bookmarks(instance):
        bookmarks_invalidate(instance=instance, reason="instance_finished", actor=actor)


@receiver(instance_faulted, dispatch_uid="bookmarks.invalidate_on_fault", when=_may_have_bookmarks)
def _invalidate_on_fault(sender, instance, actor, **kwargs):
    if _may_have_bookmarks(instance):
        bookmarks_invalidate(instance=instance, reason="instance_faulted", actor=actor)


def _may_consume(instance) -> bool:
    # Nothing to burn for a version without bookmarks, nor while a bookmark resume drives the
    # engine (it burns its own bookmark).
    return _may_have_bookmarks(instance) and may_consume_resumed(instance)


@receiver(instance_resumed, dispatch_uid="bookmarks.consume_on_resume", when=_may_consume)
def _consume_on_resume(sender, instance, actor, activity_id=None, **kwargs):
    if activity_id and _may_consume(instance):
        bookmarks_consume_resumed(instance=instance, activity_id=activity_id, actor=actor)
