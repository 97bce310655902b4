"""Reads of the bookmarks app: an instance's bookmarks, and the live bookmark a token names."""

from django.db.models import QuerySet
from django.utils import timezone

from bookmarks.models import Bookmark, BookmarkStatus, ResumeToken
from bookmarks.tokens import ResumeTokenPayload
from elsa_site.errors import DomainError, NotFound, TooManyRequests
from workflows.models import InstanceStatus, WorkflowDefinition, WorkflowInstance


class SoftBlocked(TooManyRequests):
    code = "soft_blocked"


def refused(exc: DomainError, reason: str) -> DomainError:
    """Tag a refusal with the precise reason for the audit log (the response keeps the generic one)."""
    exc.reason = reason
    return exc


def gone(reason: str) -> DomainError:
    # One public answer for every dead link; the precise reason goes to the audit log only.
    return refused(NotFound("This resume link is no longer valid.", code="bookmark_gone"), reason)


def instance_bookmarks(*, instance: WorkflowInstance) -> QuerySet[Bookmark]:
    return Bookmark.objects.filter(instance=instance).prefetch_related("tokens").order_by("created_at")


def bookmark_check_live(bookmark: Bookmark, payload: ResumeTokenPayload, instance: WorkflowInstance) -> None:
    """Raise 404 unless the bookmark still waits: active, unexpired, its instance neither stopped nor another."""
    if str(bookmark.instance_id) != payload.instance_id or str(instance.pk) != payload.instance_id:
        # Cannot happen without our key; refuse rather than resume some other instance.
        raise gone("instance_mismatch")
    if bookmark.status != BookmarkStatus.ACTIVE:
        raise gone(f"bookmark_{bookmark.status}")
    if bookmark.expires_at <= timezone.now():
        raise gone("bookmark_expired")
    if instance.status not in (InstanceStatus.SUSPENDED, InstanceStatus.RUNNING):
        raise gone(f"instance_{instance.status.lower()}")


def bookmark_for_token(payload: ResumeTokenPayload, *, lock: bool = False) -> Bookmark:
    """The live bookmark an authentic, unexpired token names, checked in the contract's order.

    Token id denylist (404) -> soft block (429) -> bookmark live (404). One query fetches the token
    row, its bookmark and the instance's status and run state. With lock=True (the resume, inside
    its transaction) the bookmark row is locked FOR UPDATE, and only that row: the instance row is
    the engine's per-step lock, which a refused attempt must never hold. Without it (the approval
    page) this only reads and never consumes anything.
    """
    rows = ResumeToken.objects.select_related("bookmark__instance").only(
        "id",
        "revoked_at",
        *(f"bookmark__{field.name}" for field in Bookmark._meta.concrete_fields),
        "bookmark__instance__id",
        "bookmark__instance__status",
        "bookmark__instance__state",
        "bookmark__instance__definition_id",
    )
    if lock:
        rows = rows.select_for_update(of=("bookmark",))
    token_row = rows.filter(pk=payload.token_id).first()
    if token_row is None or str(token_row.bookmark_id) != payload.bookmark_id:
        raise gone("token_unknown")
    if token_row.revoked_at is not None:
        raise gone("token_revoked")
    bookmark = token_row.bookmark
    if bookmark.soft_blocked:
        raise refused(
            SoftBlocked("This resume link is blocked after repeated failures; ask an operator to clear it."),
            "soft_blocked",
        )
    bookmark_check_live(bookmark, payload, bookmark.instance)
    return bookmark


def bookmark_approval_summary(bookmark: Bookmark) -> dict:
    """What the approval page may show: workflow name, activity, expiry (no variables, input or outputs)."""
    definition = WorkflowDefinition.objects.only("name").get(pk=bookmark.instance.definition_id)
    return {"workflow_name": definition.name, "activity_id": bookmark.activity_id, "expires_at": bookmark.expires_at}
