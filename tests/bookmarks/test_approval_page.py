"""/elsa/approve: strict CSP, shows only what is approved, GET never consumes, CSRF-protected decision."""

import re

import pytest
from django.test import Client

from bookmarks.services import bookmark_revoke
from tests.audit_log import chained_events
from tests.bookmarks.factories import OPERATOR, approval_document, run_in_process, suspended, token_for

pytestmark = pytest.mark.django_db

CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def page(token: str) -> str:
    return f"/elsa/approve?t={token}"


def csrf_client() -> Client:
    return Client(enforce_csrf_checks=True)


def open_page(client: Client, token: str):
    response = client.get(page(token))
    match = CSRF_FIELD.search(response.content.decode())
    return response, (match.group(1) if match else None)


def test_page_shows_workflow_activity_and_expiry_under_a_strict_csp():
    instance, bookmark = suspended(approval_document(name="purchase-approval"), {"amount": 987654})
    client = csrf_client()
    response, csrf = open_page(client, token_for(bookmark).token)
    assert response.status_code == 200
    html = response.content.decode()
    assert "purchase-approval" in html
    assert "approve" in html
    assert bookmark.expires_at.strftime("%Y-%m-%d %H:%M") in html
    # No variables, input or outputs on the page.
    assert "987654" not in html
    csp = response["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "form-action 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    assert f'<style nonce="{nonce}">' in html
    assert "<script" not in html
    # same-origin, so the browser's POST carries Origin/Referer for the CSRF check; the token in
    # the URL still goes nowhere else: the page loads nothing and links nowhere.
    assert response["Referrer-Policy"] == "same-origin"
    assert 'name="referrer"' not in html
    assert not re.search(r"\b(src|href|action)=", html)
    assert "no-store" in response["Cache-Control"]
    assert csrf


def test_opening_the_page_never_consumes_the_bookmark():
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    client = csrf_client()
    for _ in range(3):  # a mail scanner prefetching the link, then the human
        assert client.get(page(issued.token)).status_code == 200
    bookmark.refresh_from_db()
    assert bookmark.status == "active" and bookmark.resume_count == 0
    assert not chained_events().filter(event_type="bookmark.resume").exists()


def test_approving_resumes_with_approved_true():
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    client = csrf_client()
    _, csrf = open_page(client, issued.token)
    response = client.post(page(issued.token), {"decision": "approve", "csrfmiddlewaretoken": csrf})
    assert response.status_code == 200, response.content
    assert "approved" in response.content.decode()
    assert run_in_process(instance).outputs["approve"] == {"approved": True}
    event = chained_events().filter(event_type="bookmark.resume").latest("id")
    assert event.result == "success" and event.context["channel"] == "approval-page"


def test_rejecting_resumes_with_approved_false():
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    client = csrf_client()
    _, csrf = open_page(client, issued.token)
    assert client.post(page(issued.token), {"decision": "reject", "csrfmiddlewaretoken": csrf}).status_code == 200
    assert run_in_process(instance).outputs["approve"] == {"approved": False}


def test_a_decision_without_the_csrf_token_is_refused():
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    client = csrf_client()
    client.get(page(issued.token))
    assert client.post(page(issued.token), {"decision": "approve"}).status_code == 403
    bookmark.refresh_from_db()
    assert bookmark.status == "active"


def test_a_decision_posted_with_the_origin_header_a_browser_sends_is_accepted():
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    client = csrf_client()
    _, csrf = open_page(client, issued.token)
    response = client.post(
        page(issued.token), {"decision": "approve", "csrfmiddlewaretoken": csrf}, HTTP_ORIGIN="http://testserver"
    )
    assert response.status_code == 200, response.content
    assert run_in_process(instance).outputs["approve"] == {"approved": True}


def test_a_decision_posted_over_https_with_a_same_origin_referer_is_accepted():
    # A browser that sends no Origin still sends the page's URL as Referer under same-origin;
    # over https Django's CSRF check requires it.
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    client = csrf_client()
    response = client.get(page(issued.token), secure=True)
    csrf = CSRF_FIELD.search(response.content.decode()).group(1)
    response = client.post(
        page(issued.token),
        {"decision": "reject", "csrfmiddlewaretoken": csrf},
        secure=True,
        HTTP_REFERER=f"https://testserver{page(issued.token)}",
    )
    assert response.status_code == 200, response.content
    assert run_in_process(instance).outputs["approve"] == {"approved": False}


@pytest.mark.parametrize("origin", ["https://evil.example", "null"])
def test_a_decision_posted_from_another_origin_is_refused(origin):
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    client = csrf_client()
    _, csrf = open_page(client, issued.token)
    response = client.post(page(issued.token), {"decision": "approve", "csrfmiddlewaretoken": csrf}, HTTP_ORIGIN=origin)
    assert response.status_code == 403
    bookmark.refresh_from_db()
    assert bookmark.status == "active"


def test_a_second_decision_is_refused_as_no_longer_open():
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    client = csrf_client()
    _, csrf = open_page(client, issued.token)
    assert client.post(page(issued.token), {"decision": "approve", "csrfmiddlewaretoken": csrf}).status_code == 200
    again = client.post(page(issued.token), {"decision": "reject", "csrfmiddlewaretoken": csrf})
    assert again.status_code == 404
    assert client.get(page(issued.token)).status_code == 404


def test_an_unknown_decision_is_400_and_audited():
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    client = csrf_client()
    _, csrf = open_page(client, issued.token)
    assert client.post(page(issued.token), {"decision": "maybe", "csrfmiddlewaretoken": csrf}).status_code == 400
    event = chained_events().get(event_type="bookmark.resume")
    assert event.result == "failure"
    assert event.context["reason"] == "invalid_decision" and event.context["status"] == 400
    assert event.context["channel"] == "approval-page"
    assert event.context["token_fingerprint"] == issued.record.fingerprint


def test_a_rate_limited_decision_is_audited_once_per_window(settings):
    settings.ELSA_RESUME_RATE = "1/d"  # day window: no boundary inside the test
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    client = csrf_client()
    _, csrf = open_page(client, issued.token)  # the window's one allowed request
    for _ in range(2):
        response = client.post(page(issued.token), {"decision": "approve", "csrfmiddlewaretoken": csrf})
        assert response.status_code == 429
    event = chained_events().get(event_type="bookmark.resume")  # the first refusal only
    assert event.result == "failure" and event.context["reason"] == "rate_limited"
    assert event.context["status"] == 429 and event.context["channel"] == "approval-page"
    bookmark.refresh_from_db()
    assert bookmark.status == "active"


@pytest.mark.parametrize("token", ["", "garbage"])
def test_bad_links_show_an_error_page_without_a_form(token):
    response = csrf_client().get(page(token))
    assert response.status_code == 400
    assert "csrfmiddlewaretoken" not in response.content.decode()
    assert "default-src 'none'" in response["Content-Security-Policy"]


def test_revoked_links_show_no_longer_open():
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    bookmark_revoke(bookmark=bookmark, actor=OPERATOR)
    response = csrf_client().get(page(issued.token))
    assert response.status_code == 404
    assert "csrfmiddlewaretoken" not in response.content.decode()


def test_the_page_is_rate_limited_per_client_ip(settings):
    settings.ELSA_RESUME_RATE = "2/d"  # day window: no boundary inside the test
    client = csrf_client()
    statuses = [client.get(page("garbage"), REMOTE_ADDR="10.77.0.1").status_code for _ in range(3)]
    assert statuses == [400, 400, 429]


def test_page_shows_the_links_expiry_when_its_token_expires_before_the_bookmark():
    _, bookmark = suspended(approval_document(name="purchase-approval"), {"amount": 1})
    issued = token_for(bookmark, ttl_seconds=600)
    response, _ = open_page(csrf_client(), issued.token)
    html = response.content.decode()
    assert issued.expires_at < bookmark.expires_at
    assert issued.expires_at.strftime("%Y-%m-%d %H:%M") in html
    assert bookmark.expires_at.strftime("%Y-%m-%d %H:%M") not in html
