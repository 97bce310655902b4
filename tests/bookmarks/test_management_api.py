"""Operator endpoints: list an instance's bookmarks (never tokens), mint tokens, revoke bookmarks and tokens."""

import datetime as dt
import json
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from bookmarks.models import Bookmark, ResumeToken
from tests.audit_log import chained_events
from tests.bookmarks.factories import approval_document, run_in_process, suspended, token_for
from tests.identity.factories import principal_headers

pytestmark = pytest.mark.django_db


def tokens_url(bookmark) -> str:
    return f"/elsa/api/bookmarks/{bookmark.pk}/tokens"


def test_listing_an_instances_bookmarks_never_shows_a_token(api_client):
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    response = api_client.get(
        f"/elsa/api/workflow-instances/{instance.pk}/bookmarks", **principal_headers("read:bookmarks")
    )
    assert response.status_code == 200, response.content
    [item] = response.json()["items"]
    assert item["id"] == str(bookmark.pk)
    assert item["activity_id"] == "approve"
    assert item["status"] == "active"
    assert item["auto_burn"] is True
    assert item["tokens"][0]["id"] == str(issued.record.pk)
    assert item["tokens"][0]["fingerprint"] == issued.record.fingerprint
    assert issued.token not in response.content.decode()
    assert "token" not in {key for token in item["tokens"] for key in token}


def test_listing_needs_read_bookmarks(api_client):
    instance, _ = suspended()
    url = f"/elsa/api/workflow-instances/{instance.pk}/bookmarks"
    assert api_client.get(url).status_code == 401
    assert api_client.get(url, **principal_headers("read:workflow-instances")).status_code == 403


def test_minting_a_token_returns_a_working_absolute_url(api_client, client, settings):
    settings.ELSA_PUBLIC_URL = "https://flows.example.com"
    instance, bookmark = suspended()
    response = api_client.post(
        tokens_url(bookmark), {"ttl_seconds": 600}, format="json", **principal_headers("issue:bookmark-tokens")
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert response["Cache-Control"] == "no-store"
    assert body["url"] == f"https://flows.example.com/elsa/api/bookmarks/resume?t={body['token']}"
    assert body["approve_url"] == f"https://flows.example.com/elsa/approve?t={body['token']}"
    expires_at = dt.datetime.fromisoformat(body["expires_at"])
    assert timezone.now() + dt.timedelta(seconds=590) < expires_at <= timezone.now() + dt.timedelta(seconds=600)
    record = ResumeToken.objects.get(pk=body["token_id"])
    assert body["token"] not in json.dumps(list(ResumeToken.objects.values()), default=str)
    event = chained_events().get(event_type="bookmark.token_issued", context__token_id=str(record.pk))
    assert event.context["token_fingerprint"] == record.fingerprint
    assert event.actor_type == "application"
    path = urlsplit(body["url"])
    resumed = client.post(f"{path.path}?{path.query}", {"input": {}}, content_type="application/json")
    assert resumed.status_code == 200


def test_minting_with_expires_at_is_capped_at_the_bookmark_expiry(api_client):
    instance, bookmark = suspended(approval_document(ttl_seconds=300))
    later = (timezone.now() + dt.timedelta(days=2)).isoformat()
    response = api_client.post(
        tokens_url(bookmark), {"expires_at": later}, format="json", **principal_headers("issue:bookmark-tokens")
    )
    assert response.status_code == 201, response.content
    assert dt.datetime.fromisoformat(response.json()["expires_at"]) <= bookmark.expires_at


def test_minting_refuses_bad_lifetimes_and_inactive_bookmarks(api_client):
    instance, bookmark = suspended()
    headers = principal_headers("issue:bookmark-tokens")
    past = (timezone.now() - dt.timedelta(minutes=1)).isoformat()
    assert api_client.post(tokens_url(bookmark), {"expires_at": past}, format="json", **headers).status_code == 400
    assert api_client.post(tokens_url(bookmark), {"ttl_seconds": 0}, format="json", **headers).status_code == 400
    both = {"ttl_seconds": 5, "expires_at": timezone.now().isoformat()}
    assert api_client.post(tokens_url(bookmark), both, format="json", **headers).status_code == 400
    Bookmark.objects.filter(pk=bookmark.pk).update(status="consumed")
    assert api_client.post(tokens_url(bookmark), {}, format="json", **headers).status_code == 409


@pytest.mark.parametrize("ttl_seconds", [2592001, 10**12, 10**20])
def test_minting_with_a_ttl_beyond_the_maximum_is_400_never_an_overflow(api_client, ttl_seconds):
    instance, bookmark = suspended()
    api_client.raise_request_exception = False
    headers = principal_headers("issue:bookmark-tokens")
    response = api_client.post(tokens_url(bookmark), {"ttl_seconds": ttl_seconds}, format="json", **headers)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid"


def test_the_lifetime_service_refuses_a_ttl_beyond_the_maximum_before_building_it():
    from bookmarks.services import bookmark_lifetime
    from elsa_site.errors import InvalidInput

    with pytest.raises(InvalidInput):
        bookmark_lifetime(ttl_seconds=10**20)


def test_minting_needs_issue_bookmark_tokens(api_client):
    instance, bookmark = suspended()
    assert api_client.post(tokens_url(bookmark), {}, format="json").status_code == 401
    response = api_client.post(tokens_url(bookmark), {}, format="json", **principal_headers("read:bookmarks"))
    assert response.status_code == 403


def test_revoking_a_bookmark_makes_its_tokens_404_and_is_audited(api_client, client):
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    response = api_client.post(
        f"/elsa/api/bookmarks/{bookmark.pk}/revoke", {}, format="json", **principal_headers("revoke:bookmarks")
    )
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "revoked"
    assert chained_events().filter(event_type="bookmark.revoked", resource_id=str(bookmark.pk)).count() == 1
    resumed = client.post(f"/elsa/api/bookmarks/resume?t={issued.token}", {}, content_type="application/json")
    assert resumed.status_code == 404


def test_revoking_one_token_id_leaves_the_bookmark_usable(api_client, client):
    instance, bookmark = suspended()
    leaked, fresh = token_for(bookmark), token_for(bookmark)
    response = api_client.post(
        f"/elsa/api/bookmarks/{bookmark.pk}/revoke",
        {"token_id": str(leaked.record.pk)},
        format="json",
        **principal_headers("revoke:bookmarks"),
    )
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "active"
    revoked = {t["id"]: t["revoked"] for t in response.json()["tokens"]}
    assert revoked == {str(leaked.record.pk): True, str(fresh.record.pk): False}
    assert chained_events().filter(event_type="bookmark.token_revoked", context__token_id=str(leaked.record.pk))
    url = "/elsa/api/bookmarks/resume?t="
    assert client.post(url + leaked.token, {}, content_type="application/json").status_code == 404
    assert client.post(url + fresh.token, {}, content_type="application/json").status_code == 200


def test_revoke_needs_revoke_bookmarks(api_client):
    instance, bookmark = suspended()
    url = f"/elsa/api/bookmarks/{bookmark.pk}/revoke"
    assert api_client.post(url, {}, format="json").status_code == 401
    assert api_client.post(url, {}, format="json", **principal_headers("read:bookmarks")).status_code == 403
    bookmark.refresh_from_db()
    assert bookmark.status == "active"


def test_wait_for_resume_fields_are_validated_when_the_definition_is_saved(api_client):
    document = approval_document(
        ttl_seconds=-5, on_expiry="explode", input_schema={"type": 12}, notify_email={"to": "'a@b.c'"}
    )
    response = api_client.post(
        "/elsa/api/workflow-definitions", document, format="json", **principal_headers("write:workflow-definitions")
    )
    assert response.status_code == 400, response.content
    pointers = {problem["pointer"] for problem in response.json()["error"]["details"]}
    assert {
        "/activities/1/ttl_seconds",
        "/activities/1/on_expiry",
        "/activities/1/input_schema",
        "/activities/1/notify_email/subject",
        "/activities/1/notify_email/body",
    } <= pointers


def test_resume_output_is_visible_after_the_run(client):
    instance, bookmark = suspended()
    client.post(
        f"/elsa/api/bookmarks/resume?t={token_for(bookmark).token}",
        {"input": {"approved": True}},
        content_type="application/json",
    )
    assert run_in_process(instance).outputs["approve"] == {"approved": True}
