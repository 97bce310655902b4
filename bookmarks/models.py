"""Bookmarks (where a suspended instance waits for an outside resume) and their issued resume tokens."""

import uuid

from django.db import models
from django.utils import timezone

from elsa_site.errors import Conflict


class BookmarkStatus(models.TextChoices):
    ACTIVE = "active"
    CONSUMED = "consumed"
    REVOKED = "revoked"
    EXPIRED = "expired"
    # The instance was cancelled, finished or faulted: nothing is waiting any more.
    INVALIDATED = "invalidated"


# The declared state machine: only an active bookmark changes state, and each end state is final.
BOOKMARK_TRANSITIONS: dict[str, frozenset[str]] = {
    BookmarkStatus.ACTIVE: frozenset(
        {BookmarkStatus.CONSUMED, BookmarkStatus.REVOKED, BookmarkStatus.EXPIRED, BookmarkStatus.INVALIDATED}
    ),
    BookmarkStatus.CONSUMED: frozenset(),
    BookmarkStatus.REVOKED: frozenset(),
    BookmarkStatus.EXPIRED: frozenset(),
    BookmarkStatus.INVALIDATED: frozenset(),
}


class OnExpiry(models.TextChoices):
    FAULT = "fault"
    TIMEOUT = "timeout"


class Bookmark(models.Model):
    """A point where an instance waits for a resume from outside (an approval, a partner callback)."""

    Status = BookmarkStatus

    # A random id: nothing about a bookmark's id helps to guess another one.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    instance = models.ForeignKey("workflows.WorkflowInstance", on_delete=models.CASCADE, related_name="bookmarks")
    activity_id = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=BookmarkStatus.choices, default=BookmarkStatus.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    auto_burn = models.BooleanField(default=True)
    on_expiry = models.CharField(max_length=16, choices=OnExpiry.choices, default=OnExpiry.FAULT)
    input_schema = models.JSONField(null=True, blank=True)
    consumed_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    invalidated_at = models.DateTimeField(null=True, blank=True)
    resume_count = models.PositiveIntegerField(default=0)
    last_resumed_at = models.DateTimeField(null=True, blank=True)
    # Failed attempts (bad input or schema) since the last clear; at ELSA_RESUME_MAX_FAILURES the
    # bookmark is soft-blocked (429) until an operator clears it in the admin.
    failure_count = models.PositiveIntegerField(default=0)
    soft_blocked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "expires_at"], name="bookmark_status_expiry_idx"),
            models.Index(fields=["instance", "activity_id"], name="bookmark_instance_activity_idx"),
        ]

    def __str__(self) -> str:
        return f"bookmark {self.id} ({self.activity_id}, {self.status})"

    @property
    def soft_blocked(self) -> bool:
        return self.soft_blocked_at is not None

    @property
    def is_active(self) -> bool:
        return self.status == BookmarkStatus.ACTIVE

    def transition(self, target: str, *, at=None) -> None:
        """Move to `target`, stamping its time; an undeclared move is a Conflict (409)."""
        if target not in BOOKMARK_TRANSITIONS[self.status]:
            raise Conflict(f"A {self.status} bookmark cannot become {target}.", code="illegal_transition")
        at = at or timezone.now()
        self.status = target
        stamp = {
            BookmarkStatus.CONSUMED: "consumed_at",
            BookmarkStatus.REVOKED: "revoked_at",
            BookmarkStatus.EXPIRED: "expired_at",
            BookmarkStatus.INVALIDATED: "invalidated_at",
        }[target]
        setattr(self, stamp, at)


class ResumeToken(models.Model):
    """An issued resume token, known by its id and fingerprint only: the token itself is never stored.

    A row with `revoked_at` set is the denylist entry of that token id; rows are pruned once the
    token has expired, since an expired token is refused (401) before the denylist is consulted.
    """

    # The token id ("j" in the payload), random, so a token cannot be derived from it.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    bookmark = models.ForeignKey(Bookmark, on_delete=models.CASCADE, related_name="tokens")
    # SHA-256 of the token string: matches an audit event to the token without storing it.
    fingerprint = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(db_index=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"resume token {self.id}"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None
