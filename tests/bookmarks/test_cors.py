"""CORS on the resume endpoint: configured origins only, GET and POST, no credentials, preflight cached."""

import json

import pytest

from tests.bookmarks.factories import suspended, token_for

pytestmark = pytest.mark.django_db

ALLOWED = "https://portal.example.com"


@pytest.fixture(autouse=True)
def _cors(settings):
    settings.CORS_ALLOWED_ORIGINS = [ALLOWED]


def test_configured_origin_gets_cors_headers_on_post_resume(client):
    instance, bookmark = suspended()
    response = client.post(
        f"/elsa/api/bookmarks/resume?t={token_for(bookmark).token}",
        json.dumps({"input": {}}),
        content_type="application/json",
        HTTP_ORIGIN=ALLOWED,
    )
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ALLOWED
    assert "Access-Control-Allow-Credentials" not in response


def test_configured_origin_gets_cors_headers_on_get_resume_even_when_refused(client):
    response = client.get("/elsa/api/bookmarks/resume?t=garbage", HTTP_ORIGIN=ALLOWED)
    assert response.status_code == 400
    assert response["Access-Control-Allow-Origin"] == ALLOWED


def test_unconfigured_origin_gets_no_cors_headers(client):
    instance, bookmark = suspended()
    token = token_for(bookmark).token
    response = client.get(f"/elsa/api/bookmarks/resume?t={token}", HTTP_ORIGIN="https://evil.example.net")
    assert "Access-Control-Allow-Origin" not in response
    post = client.post(
        f"/elsa/api/bookmarks/resume?t={token}",
        "{}",
        content_type="application/json",
        HTTP_ORIGIN="https://evil.example.net",
    )
    assert "Access-Control-Allow-Origin" not in post


def test_preflight_allows_get_and_post_and_is_cached(client):
    response = client.options(
        "/elsa/api/bookmarks/resume",
        HTTP_ORIGIN=ALLOWED,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type",
    )
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ALLOWED
    methods = {m.strip() for m in response["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST"} <= methods
    assert int(response["Access-Control-Max-Age"]) > 0


def test_the_approval_page_is_outside_cors(client):
    response = client.get("/elsa/approve?t=garbage", HTTP_ORIGIN=ALLOWED)
    assert "Access-Control-Allow-Origin" not in response


def test_resume_and_api_are_csrf_exempt_while_the_approval_page_is_not():
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    # No CSRF token, and a cookie-less client: the token in the URL is the credential.
    resume = strict.post("/elsa/api/bookmarks/resume?t=garbage", "{}", content_type="application/json")
    assert resume.status_code == 400
    assert strict.post("/elsa/approve?t=garbage", {"decision": "approve"}).status_code == 403
