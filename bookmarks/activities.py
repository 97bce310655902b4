"""The WaitForResume activity: suspend until a resume token (URL or approval page) continues the instance."""

import datetime as dt
import re

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from bookmarks.models import Bookmark, BookmarkStatus, OnExpiry
from bookmarks.resume_input import schema_problems
from bookmarks.services import bookmark_create, bookmark_lifetime, resume_token_issue
from elsa_site.errors import DomainError
from workflows.activities.base import Activity, ActivityContext, Fault, Suspend, register_activity
from workflows.expressions import ExpressionError
from workflows.secrets import scrub_text

NOTIFY_FIELDS = ("to", "subject", "body")


def _expires_at(node: dict) -> dt.datetime:
    raw = node.get("expires_at")
    expires_at = parse_datetime(raw) if isinstance(raw, str) else None
    return bookmark_lifetime(ttl_seconds=node.get("ttl_seconds"), expires_at=expires_at)


def _recipients(value) -> list[str]:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item.strip() for item in value if item.strip()]
    raise ValueError("notify_email.to must evaluate to a string or a list of strings")


# A token in a link, also one cut short where an error message was truncated.
_TOKEN_PARAMETER = re.compile(r"([?&]t=)[A-Za-z0-9_=%-]+")


def _evaluate_with_links(ctx: ActivityContext, expression, names: dict, links: frozenset[str]):
    """Evaluate a notify_email expression that may read the links; a failure never quotes them.

    CEL's error messages can quote a value (`duration(resume_url)` quotes the URL), and the fault
    message is stored on the instance and its execution record: the links and the token are masked.
    """
    try:
        return ctx.evaluate(expression, extra=names)
    except ExpressionError as exc:
        message = _TOKEN_PARAMETER.sub(r"\1****", scrub_text(exc.message, links))
        raise ExpressionError(exc.expression, message) from None


@register_activity
class WaitForResume(Activity):
    """Suspends the instance behind a bookmark; a resume with a valid token continues it (outcome Done).

    Fields: ttl_seconds or expires_at (ISO 8601 with a zone; default ELSA_BOOKMARK_DEFAULT_TTL_SECONDS),
    auto_burn (default true), input_schema (JSON Schema of the resume input), on_expiry (fault or
    timeout), notify_email {to, subject, body} (CEL; may use resume_url and approve_url). The
    resume input becomes outputs.<activity id>; expiry with on_expiry=timeout takes outcome Timeout.
    """

    type_name = "WaitForResume"
    outcomes = ("Done", "Timeout")
    expression_fields = ("notify_email.to", "notify_email.subject", "notify_email.body")

    def validate(self, node: dict) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        ttl, expires_at = node.get("ttl_seconds"), node.get("expires_at")
        if ttl is not None and expires_at is not None:
            problems.append(("/expires_at", "give ttl_seconds or expires_at, not both"))
        if ttl is not None and (
            not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 < ttl <= settings.ELSA_BOOKMARK_MAX_TTL_SECONDS
        ):
            problems.append(
                ("/ttl_seconds", f"must be an integer between 1 and {settings.ELSA_BOOKMARK_MAX_TTL_SECONDS}")
            )
        if expires_at is not None:
            parsed = parse_datetime(expires_at) if isinstance(expires_at, str) else None
            if parsed is None or timezone.is_naive(parsed):
                problems.append(("/expires_at", "must be an ISO 8601 date-time with a time zone"))
        if "auto_burn" in node and not isinstance(node["auto_burn"], bool):
            problems.append(("/auto_burn", "must be true or false"))
        if "input_schema" in node:
            problems += [("/input_schema", message) for message in schema_problems(node["input_schema"])]
        if node.get("on_expiry", OnExpiry.FAULT) not in OnExpiry.values:
            problems.append(("/on_expiry", "must be 'fault' or 'timeout'"))
        notify = node.get("notify_email")
        if notify is not None:
            if not isinstance(notify, dict):
                problems.append(("/notify_email", "must be an object with to, subject and body"))
            else:
                problems += [(f"/notify_email/{name}", "is required") for name in NOTIFY_FIELDS if name not in notify]
                problems += [
                    (f"/notify_email/{name}", "is not a field of notify_email")
                    for name in notify
                    if name not in NOTIFY_FIELDS
                ]
        return problems

    def execute(self, ctx: ActivityContext):
        node = ctx.node
        auto_burn = node.get("auto_burn", True)
        if not auto_burn:
            # A non-burning bookmark is reused when a loop brings the instance back here, so the link
            # already handed out keeps working until it expires or is revoked.
            reusable = Bookmark.objects.filter(
                instance=ctx.instance, activity_id=ctx.activity_id, status=BookmarkStatus.ACTIVE, auto_burn=False
            ).first()
            if reusable is not None and reusable.expires_at > timezone.now():
                return Suspend(data={"bookmark_id": str(reusable.pk)})
        try:
            bookmark = bookmark_create(
                instance=ctx.instance,
                activity_id=ctx.activity_id,
                expires_at=_expires_at(node),
                auto_burn=auto_burn,
                input_schema=node.get("input_schema"),
                on_expiry=node.get("on_expiry", OnExpiry.FAULT),
                actor=ctx.actor,
            )
        except DomainError as exc:
            return Fault(exc.message)
        notify = node.get("notify_email")
        if notify:
            issued = resume_token_issue(bookmark=bookmark, actor=ctx.actor)
            # The URLs exist only here and in the e-mail: they are names for the expressions, never
            # stored in outputs or variables (the token is not kept anywhere on our side).
            names = {"resume_url": issued.url, "approve_url": issued.approve_url}
            links = frozenset({*names.values(), issued.token})
            to = _recipients(_evaluate_with_links(ctx, notify["to"], names, links))
            # Header injection is impossible: the subject is folded onto one line.
            subject = " ".join(str(ctx.scrub(_evaluate_with_links(ctx, notify["subject"], names, links))).split())
            body = str(ctx.scrub(_evaluate_with_links(ctx, notify["body"], names, links)))
            # Sent after commit: a step that rolls back (and will run again) sends nothing. robust=True:
            # a mail failure is logged and leaves the instance suspended (an operator can mint a new URL).
            transaction.on_commit(
                lambda: send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, to, fail_silently=False), robust=True
            )
        return Suspend(data={"bookmark_id": str(bookmark.pk)})
