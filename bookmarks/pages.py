"""Human-facing pages of the bookmarks app: /elsa/approve, a strict-CSP page that approves or rejects."""

import secrets

from django.http import HttpResponse
from django.template.loader import render_to_string
from django.urls import path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from audit.actors import client_ip
from bookmarks import services
from bookmarks.ratelimits import resume_rate_check
from bookmarks.selectors import bookmark_approval_summary, bookmark_for_token
from bookmarks.tokens import resume_token_decode
from elsa_site.errors import DomainError

DECISIONS = {"approve": True, "reject": False}

_TITLES = {
    400: "This link is not valid",
    401: "This link has expired",
    404: "This request is no longer open",
    429: "Too many attempts",
}


def _csp(nonce: str) -> str:
    # Nothing loads but our own nonce'd stylesheet; the form may only post back here; no framing.
    return f"default-src 'none'; style-src 'nonce-{nonce}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"


def _page(request, *, status: int = 200, title: str, message: str = "", details=None, show_form=False):
    nonce = secrets.token_urlsafe(16)
    html = render_to_string(
        "bookmarks/approve.html",
        {
            "title": title,
            "message": message,
            "details": details,
            "show_form": show_form,
            "csp_nonce": nonce,
        },
        request=request,
    )
    response = HttpResponse(html, status=status, content_type="text/html; charset=utf-8")
    response["Content-Security-Policy"] = _csp(nonce)
    # The URL holds the token. same-origin: browsers send the Referer (and a real Origin) only back
    # to us, which Django's CSRF check needs on the form's POST (under no-referrer a browser sends
    # `Origin: null` and no Referer, and the POST is refused); the page loads nothing from
    # elsewhere (CSP default-src 'none') and links nowhere, so the token never leaves the origin.
    response["Referrer-Policy"] = "same-origin"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _refusal(request, exc: DomainError):
    return _page(
        request, status=exc.http_status, title=_TITLES.get(exc.http_status, "Request refused"), message=exc.message
    )


@never_cache
@require_http_methods(["GET", "POST"])
def approve(request):
    """GET shows what is being approved and never consumes (mail scanners prefetch); POST decides."""
    token = request.GET.get("t")
    decision = request.POST.get("decision") if request.method == "POST" else None
    # A POST is a resume attempt: its refusals are audited as the API audits them (a GET is not one).
    attempt = services.ResumeAttempt(
        token=token,
        client_ip=client_ip(request),
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
        channel="approval-page",
        read_input=lambda: {"approved": DECISIONS[decision]},
    )
    rate = resume_rate_check(request)
    if rate.limited:
        if request.method == "POST" and rate.first_refusal:
            services.resume_attempt_audit_failure(attempt=attempt, reason="rate_limited", status=429)
        return _page(request, status=429, title=_TITLES[429], message="Please try again in a minute.")
    if request.method == "GET":
        try:
            payload = resume_token_decode(token)
            bookmark = bookmark_for_token(payload)
        except DomainError as exc:
            return _refusal(request, exc)
        details = bookmark_approval_summary(bookmark, payload)
        return _page(request, title="Approval requested", details=details, show_form=True)

    if decision not in DECISIONS:
        services.resume_attempt_audit_failure(attempt=attempt, reason="invalid_decision", status=400)
        return _page(request, status=400, title="Choose approve or reject")
    try:
        services.bookmark_resume(attempt=attempt)
    except DomainError as exc:
        return _refusal(request, exc)
    verb = "approved" if DECISIONS[decision] else "rejected"
    return _page(request, title=f"Thank you: {verb}", message="Your decision was recorded.")


# Anonymous by design (the token is the credential): allowlisted in the URL walk; CSRF stays on.
approve.elsa_anonymous = True

urlpatterns = [path("elsa/approve", approve, name="bookmarks-approve")]
