"""Celery entry points of the bookmarks app: expire due bookmarks (beat), prune the token denylist."""

import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from audit.actors import Actor
from bookmarks import services
from bookmarks.models import Bookmark, BookmarkStatus, ResumeToken
from elsa_site.errors import DomainError

logger = logging.getLogger("elsa.bookmarks")

EXPIRY_ACTOR = Actor.system("bookmark-expiry")
BATCH = 500


def bookmarks_expire_due(*, limit: int = BATCH) -> int:
    """Expire every due active bookmark (each in its own transaction); returns how many expired."""
    due = list(
        Bookmark.objects.filter(status=BookmarkStatus.ACTIVE, expires_at__lte=timezone.now())
        .order_by("expires_at")
        .values_list("pk", flat=True)[:limit]
    )
    expired = 0
    for bookmark_id in due:
        # One bookmark per transaction: a failure (e.g. its instance changed meanwhile) does not hold
        # back the others; bookmark_expire re-checks under lock, so a concurrent run is harmless.
        try:
            if services.bookmark_expire(bookmark_id=bookmark_id, actor=EXPIRY_ACTOR) is not None:
                expired += 1
        except DomainError:
            logger.warning("bookmark expiry refused", extra={"bookmark_id": str(bookmark_id)}, exc_info=True)
        except (OperationalError, InterfaceError):
            raise  # the database went away: the next run starts over
        except Exception:
            # Anything else is one bookmark's problem: due bookmarks are taken oldest first, so
            # letting it end the run would stall every later one behind it, run after run.
            logger.exception("bookmark expiry failed", extra={"bookmark_id": str(bookmark_id)})
    return expired


def resume_tokens_prune() -> int:
    """Delete token rows past their expiry: an expired token is refused (401) before the denylist is read."""
    deleted, _ = ResumeToken.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted


@shared_task(name="bookmarks.expire_due", ignore_result=True)
def expire_due() -> dict:
    """Periodic (beat): idempotent, takes no arguments, safe to run on several schedulers at once."""
    return {"expired": bookmarks_expire_due(), "pruned_tokens": resume_tokens_prune()}
