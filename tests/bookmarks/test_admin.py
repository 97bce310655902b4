"""Bookmarks admin: revoke and clear-soft-block actions (audited), and no token anywhere on its pages."""

import pytest

from bookmarks.models import Bookmark, ResumeToken
from identity.models import User
from tests.audit_log import chained_events
from tests.bookmarks.factories import suspended, token_for

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/bookmarks/bookmark/"


@pytest.fixture
def staff_client(client):
    user = User.objects.create_superuser(username="root", password="correct horse battery staple x")
    client.force_login(user)
    return client


def run_action(client, url: str, action: str, *pks) -> None:
    response = client.post(url, {"action": action, "_selected_action": [str(pk) for pk in pks]})
    assert response.status_code == 302, response.content[:500]


def test_revoke_action_revokes_and_audits(staff_client):
    instance, bookmark = suspended()
    run_action(staff_client, CHANGELIST, "revoke_bookmarks", bookmark.pk)
    bookmark.refresh_from_db()
    assert bookmark.status == "revoked"
    event = chained_events().get(event_type="bookmark.revoked", resource_id=str(bookmark.pk))
    assert event.actor_type == "user"


def test_clear_soft_block_action_lets_the_token_resume_again(staff_client, client, settings):
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    Bookmark.objects.filter(pk=bookmark.pk).update(failure_count=3, soft_blocked_at="2026-01-01T00:00:00Z")
    url = f"/elsa/api/bookmarks/resume?t={issued.token}"
    assert client.post(url, {}, content_type="application/json").status_code == 429
    run_action(staff_client, CHANGELIST, "clear_soft_blocks", bookmark.pk)
    bookmark.refresh_from_db()
    assert not bookmark.soft_blocked and bookmark.failure_count == 0
    assert chained_events().filter(event_type="bookmark.soft_block_cleared", resource_id=str(bookmark.pk)).exists()
    assert client.post(url, {}, content_type="application/json").status_code == 200


def test_token_revoke_action_denies_that_token(staff_client, client):
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    run_action(staff_client, "/admin/bookmarks/resumetoken/", "revoke_tokens", issued.record.pk)
    assert ResumeToken.objects.get(pk=issued.record.pk).is_revoked
    url = f"/elsa/api/bookmarks/resume?t={issued.token}"
    assert client.post(url, {}, content_type="application/json").status_code == 404


def test_admin_pages_show_fingerprints_never_tokens_and_allow_no_edits(staff_client):
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    page = staff_client.get(f"{CHANGELIST}{bookmark.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert issued.record.fingerprint in html
    assert issued.token not in html
    assert staff_client.get(f"{CHANGELIST}add/").status_code == 403
