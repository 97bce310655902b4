"""The resume endpoint through HTTP: every status of the contract, in the contract's order of checks."""

import http.client
import io
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography.fernet import Fernet

from audit.models import AuditEvent
from bookmarks.models import Bookmark
from bookmarks.services import bookmark_revoke, resume_token_revoke
from bookmarks.tokens import ResumeTokenPayload, resume_token_encode
from tests.audit_log import chained_events
from tests.bookmarks.factories import (
    OPERATOR,
    approval_document,
    linear,
    loop_document,
    run_in_process,
    run_to_suspension,
    start_instance,
    suspended,
    token_for,
)
from tests.conftest import wait_until, worker_environment
from tests.elsa_site.test_gunicorn_logs import answers, free_port
from tests.workflows.factories import ACTOR
from workflows.encryption import encrypt
from workflows.models import WorkflowInstance
from workflows.services import workflow_instance_cancel

pytestmark = pytest.mark.django_db

RESUME = "/elsa/api/bookmarks/resume"
ROOT = Path(__file__).resolve().parents[2]


def post(client, token, body=None, *, raw=None, content_type="application/json", **extra):
    url = RESUME if token is None else f"{RESUME}?t={quote(token, safe='')}"
    data = raw if raw is not None else json.dumps({"input": {} if body is None else body})
    return client.post(url, data, content_type=content_type, **extra)


def get(client, token, value=None, **extra):
    url = f"{RESUME}?t={quote(token, safe='')}"
    if value is not None:
        url += "&in=" + quote(value if isinstance(value, str) else json.dumps(value), safe="")
    return client.get(url, **extra)


def last_resume_event() -> AuditEvent:
    return chained_events().filter(event_type="bookmark.resume").order_by("-id").first()


# --- 200 ---------------------------------------------------------------------------------------


def test_post_resume_continues_the_instance_with_the_input_in_outputs(client):
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    response = post(client, issued.token, {"approved": True, "note": "fine"})
    assert response.status_code == 200, response.content
    assert response.json() == {"instance_id": str(instance.pk), "status": "Running"}
    assert response["Cache-Control"] == "no-store"
    instance = run_in_process(instance)
    assert instance.status == "Finished"
    assert instance.outputs["approve"] == {"approved": True, "note": "fine"}
    assert instance.variables["decision"] == {"approved": True, "note": "fine"}
    bookmark.refresh_from_db()
    assert bookmark.status == "consumed" and bookmark.consumed_at is not None


def test_get_resume_takes_its_input_from_the_in_query_parameter(client):
    instance, bookmark = suspended()
    response = get(client, token_for(bookmark).token, {"approved": False})
    assert response.status_code == 200, response.content
    assert run_in_process(instance).outputs["approve"] == {"approved": False}


def test_post_with_an_empty_body_resumes_with_no_input(client):
    instance, bookmark = suspended()
    response = post(client, token_for(bookmark).token, raw="", content_type="text/plain")
    assert response.status_code == 200, response.content


def test_get_resume_is_refused_when_turned_off(client, settings):
    settings.ELSA_RESUME_ALLOW_GET = False
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    response = get(client, issued.token, {"approved": True})
    assert response.status_code == 405
    bookmark.refresh_from_db()
    assert bookmark.status == "active"
    assert post(client, issued.token, {"approved": True}).status_code == 200


def test_head_never_resumes(client):
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    assert client.head(f"{RESUME}?t={issued.token}").status_code == 405
    bookmark.refresh_from_db()
    assert bookmark.status == "active"


# --- 400 / 401: the token ------------------------------------------------------------------------


def test_missing_token_is_400(client):
    response = post(client, None)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_token"
    assert last_resume_event().context["reason"] == "token_missing"


def test_garbled_token_is_400(client):
    instance, bookmark = suspended()
    token = token_for(bookmark).token
    tampered = token[:40] + ("A" if token[40] != "A" else "B") + token[41:]
    assert post(client, tampered).status_code == 400
    assert post(client, "not-a-token").status_code == 400
    assert post(client, "x" * 5000).status_code == 400
    bookmark.refresh_from_db()
    assert bookmark.status == "active"


def test_token_made_with_a_foreign_key_is_400(client):
    instance, bookmark = suspended()
    payload = json.dumps({"b": str(bookmark.pk), "i": str(instance.pk), "j": str(uuid.uuid4()), "e": 2**33})
    foreign = Fernet(Fernet.generate_key()).encrypt(payload.encode()).decode().rstrip("=")
    response = post(client, foreign)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_token"


def test_our_ciphertext_that_is_not_a_resume_token_is_400(client):
    assert post(client, encrypt('{"hello": "world"}')).status_code == 400


def test_expired_token_is_401_and_audited_with_its_ids(client):
    instance, bookmark = suspended()
    token = resume_token_encode(
        ResumeTokenPayload(str(bookmark.pk), str(instance.pk), str(uuid.uuid4()), int(time.time()) - 1)
    )
    response = post(client, token)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_expired"
    assert response.has_header("WWW-Authenticate")
    event = last_resume_event()
    assert event.result == "failure"
    assert event.context["reason"] == "token_expired"
    assert event.context["bookmark_id"] == str(bookmark.pk)
    assert event.context["instance_id"] == str(instance.pk)


# --- 404 -------------------------------------------------------------------------------------------


def test_revoked_token_id_is_404_while_other_tokens_of_the_bookmark_still_work(client):
    instance, bookmark = suspended()
    revoked, other = token_for(bookmark), token_for(bookmark)
    resume_token_revoke(token=revoked.record, actor=OPERATOR)
    response = post(client, revoked.token)
    assert response.status_code == 404
    assert last_resume_event().context["reason"] == "token_revoked"
    assert post(client, other.token).status_code == 200


def test_revoked_bookmark_is_404(client):
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    bookmark_revoke(bookmark=bookmark, actor=OPERATOR)
    assert post(client, issued.token).status_code == 404
    assert last_resume_event().context["reason"] == "bookmark_revoked"


def test_consumed_bookmark_is_404_on_the_second_resume(client):
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    assert post(client, issued.token).status_code == 200
    second = post(client, issued.token)
    assert second.status_code == 404
    assert second.json()["error"]["code"] == "bookmark_gone"
    assert last_resume_event().context["reason"] == "bookmark_consumed"


def test_cancelled_instance_invalidates_its_bookmarks_and_their_tokens_are_404(client):
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    workflow_instance_cancel(instance=instance, actor=ACTOR)
    bookmark.refresh_from_db()
    assert bookmark.status == "invalidated"
    assert post(client, issued.token).status_code == 404
    assert last_resume_event().context["reason"] == "bookmark_invalidated"
    invalidated = chained_events().get(event_type="bookmark.invalidated", resource_id=str(bookmark.pk))
    assert invalidated.context["reason"] == "instance_cancelled"


def test_finished_instance_invalidates_a_bookmark_still_waiting_on_another_branch(client):
    document = linear(
        {"id": "fork", "type": "Fork"},
        {"id": "first", "type": "WaitForResume"},
        {"id": "second", "type": "WaitForResume"},
        {"id": "done", "type": "Finish"},
        name="two-waits",
        connections=[
            {"source": "fork", "target": "first"},
            {"source": "fork", "target": "second"},
            {"source": "first", "target": "done"},
        ],
    )
    instance = run_in_process(start_instance(document))
    assert instance.status == "Suspended"
    first = Bookmark.objects.get(instance=instance, activity_id="first")
    second = Bookmark.objects.get(instance=instance, activity_id="second")
    second_token = token_for(second)
    assert post(client, token_for(first).token).status_code == 200
    assert run_in_process(instance).status == "Finished"
    second.refresh_from_db()
    assert second.status == "invalidated"
    assert post(client, second_token.token).status_code == 404


def test_token_whose_instance_id_does_not_match_its_bookmark_is_404(client):
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    other_instance, _ = suspended()
    forged = resume_token_encode(
        ResumeTokenPayload(str(bookmark.pk), str(other_instance.pk), str(issued.record.pk), int(time.time()) + 600)
    )
    assert post(client, forged).status_code == 404
    assert last_resume_event().context["reason"] == "instance_mismatch"
    assert WorkflowInstance.objects.get(pk=other_instance.pk).status == "Suspended"


# --- 415 / 413 / 400: the input ----------------------------------------------------------------------


def test_non_json_body_is_415(client):
    instance, bookmark = suspended()
    response = post(
        client, token_for(bookmark).token, raw="approved=yes", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 415
    assert last_resume_event().context["reason"] == "input_not_json"


def test_a_non_json_body_over_one_mib_is_415_the_content_type_being_checked_first(client):
    instance, bookmark = suspended()
    response = post(client, token_for(bookmark).token, raw="x" * (1024 * 1024 + 10), content_type="text/plain")
    assert response.status_code == 415
    assert last_resume_event().context["reason"] == "input_not_json"


def test_body_over_one_mib_is_413(client):
    instance, bookmark = suspended()
    big = json.dumps({"input": {"blob": "x" * (1024 * 1024)}})
    response = post(client, token_for(bookmark).token, raw=big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    bookmark.refresh_from_db()
    assert bookmark.status == "active"


def chunked(client, token, data: bytes, content_type="application/json"):
    """A POST as gunicorn hands over a `Transfer-Encoding: chunked` request: no CONTENT_LENGTH, the
    de-chunked body on wsgi.input (a stream read to its end)."""
    return client.request(
        REQUEST_METHOD="POST",
        PATH_INFO=RESUME,
        QUERY_STRING=f"t={quote(token, safe='')}",
        CONTENT_TYPE=content_type,
        HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input": io.BytesIO(data)},
    )


def test_a_chunked_body_is_read_not_taken_as_empty(client):
    instance, bookmark = suspended()
    response = chunked(client, token_for(bookmark).token, json.dumps({"input": {"approved": False}}).encode())
    assert response.status_code == 200, response.content
    assert run_in_process(instance).outputs["approve"] == {"approved": False}


def test_a_chunked_body_over_one_mib_is_413(client):
    instance, bookmark = suspended()
    data = json.dumps({"input": {"approved": False}}).encode() + b" " * (2 * 1024 * 1024)
    response = chunked(client, token_for(bookmark).token, data)
    assert response.status_code == 413
    assert last_resume_event().context["reason"] == "input_too_large"
    bookmark.refresh_from_db()
    assert bookmark.status == "active" and bookmark.failure_count == 1


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_chunked_bodies_through_gunicorn_are_read_and_limited():
    instance_ok = start_instance(approval_document())
    instance_big = start_instance(approval_document())
    run_to_suspension(instance_ok, instance_big)
    ok_token = token_for(Bookmark.objects.get(instance=instance_ok)).token
    big_token = token_for(Bookmark.objects.get(instance=instance_big)).token
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "elsa_site/gunicorn.conf.py", "elsa_site.wsgi"],
        cwd=ROOT,
        env=worker_environment(PORT=str(port), ELSA_WEB_CONCURRENCY="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def send_chunked(token: str, chunks: list[bytes]) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            # An iterable body without Content-Length: http.client sends it chunked.
            connection.request(
                "POST", f"{RESUME}?t={token}", body=iter(chunks), headers={"Content-Type": "application/json"}
            )
            return connection.getresponse().status
        finally:
            connection.close()

    try:
        wait_until(lambda: answers(port), timeout=30, message="gunicorn to listen")
        assert send_chunked(ok_token, [b'{"input": ', b'{"approved": false}}']) == 200
        assert send_chunked(big_token, [b'{"input": {"approved": false}}'] + [b" " * 65536] * 17) == 413
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert run_in_process(instance_ok).outputs["approve"] == {"approved": False}
    assert Bookmark.objects.get(instance=instance_big).status == "active"


def test_invalid_json_is_400_without_echoing_the_input(client):
    instance, bookmark = suspended()
    response = post(client, token_for(bookmark).token, raw='{"input": {"secret-ish": "s3cr3t-value",')
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_input"
    assert b"s3cr3t-value" not in response.content
    response = get(client, token_for(bookmark).token, "[not json")
    assert response.status_code == 400


def test_schema_violation_is_400_listing_the_errors_without_echoing_the_input(client):
    schema = {
        "type": "object",
        "required": ["approved", "reason"],
        "properties": {"approved": {"type": "boolean"}, "reason": {"type": "string", "maxLength": 5}},
    }
    instance, bookmark = suspended(approval_document(input_schema=schema))
    response = post(client, token_for(bookmark).token, {"approved": "maybe-c0nfidential"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "schema_violation"
    messages = {item["schema_path"]: item["message"] for item in error["details"]}
    assert messages["/required"] == "missing required properties: reason"
    assert messages["/properties/approved/type"] == "must be of type boolean"
    assert b"maybe-c0nfidential" not in response.content
    assert "maybe-c0nfidential" not in json.dumps(last_resume_event().context)
    assert last_resume_event().context["reason"] == "input_schema_violation"
    assert post(client, token_for(bookmark).token, {"approved": True, "reason": "ok"}).status_code == 200


def test_each_bookmark_is_checked_against_its_own_schema(client):
    # Compiled validators are shared between bookmarks of equal schemas, never across different ones.
    strict = {"type": "object", "required": ["approved"], "properties": {"approved": {"type": "boolean"}}}
    loose = {"type": "object", "properties": {"approved": {"type": "string"}}}
    _, first = suspended(approval_document(input_schema=strict))
    _, second = suspended(approval_document(input_schema=loose))
    _, third = suspended(approval_document(input_schema=dict(reversed(strict.items()))))
    assert post(client, token_for(first).token, {"approved": "yes"}).status_code == 400
    assert post(client, token_for(second).token, {"approved": "yes"}).status_code == 200
    assert post(client, token_for(third).token, {}).status_code == 400
    assert post(client, token_for(first).token, {"approved": True}).status_code == 200


# --- 429 ---------------------------------------------------------------------------------------------


def test_rate_limit_per_client_ip_is_429_before_any_token_check(client, settings):
    # A day-long window: a fixed window boundary cannot fall inside the test and reset the count.
    settings.ELSA_RESUME_RATE = "3/d"
    addr = f"10.1.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    for _ in range(3):
        assert post(client, "garbage", REMOTE_ADDR=addr).status_code == 400
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    limited = post(client, issued.token, REMOTE_ADDR=addr)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    bookmark.refresh_from_db()
    assert bookmark.status == "active"
    # Another client is not affected.
    assert post(client, issued.token, REMOTE_ADDR="10.200.0.1").status_code == 200
    refusals = chained_events().filter(event_type="bookmark.resume", actor_ip=addr, context__reason="rate_limited")
    assert refusals.count() == 1  # the first refusal of the window, not the flood after it


def test_forged_forwarded_for_does_not_escape_the_rate_limit(client, settings):
    settings.ELSA_RESUME_RATE = "2/d"  # day window: no boundary inside the test
    settings.ELSA_TRUSTED_PROXY_COUNT = 0
    statuses = [
        post(client, "garbage", REMOTE_ADDR="10.9.9.9", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}").status_code
        for n in range(4)
    ]
    assert statuses == [400, 400, 429, 429]


def test_rate_limit_counter_expires_with_its_window(client, settings):
    from django.core.cache import cache
    from django_ratelimit import ALL
    from django_ratelimit.core import _get_window, _make_cache_key

    from bookmarks.ratelimits import RESUME_GROUP

    settings.ELSA_RESUME_RATE = "5/h"
    addr = f"10.3.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"
    for _ in range(2):
        assert post(client, "garbage", REMOTE_ADDR=addr).status_code == 400
    key = _make_cache_key(RESUME_GROUP, _get_window(addr, 3600), "5/h", addr, ALL)
    # django-ratelimit's own key and count, so its window and prefix still apply.
    assert cache.get(key) == 2
    if hasattr(cache, "ttl"):
        assert 0 < cache.ttl(key) <= 3600 + 5


def test_repeated_bad_input_soft_blocks_the_token_until_cleared(client, settings):
    settings.ELSA_RESUME_MAX_FAILURES = 3
    from bookmarks.services import bookmark_clear_soft_block

    instance, bookmark = suspended(approval_document(input_schema={"type": "object", "required": ["approved"]}))
    issued = token_for(bookmark)
    assert [post(client, issued.token, {"x": 1}).status_code for _ in range(3)] == [400, 400, 400]
    blocked = post(client, issued.token, {"approved": True})
    assert blocked.status_code == 429
    assert blocked.json()["error"]["code"] == "soft_blocked"
    blocks = chained_events().filter(event_type="bookmark.soft_blocked", resource_id=str(bookmark.pk))
    assert blocks.count() == 1
    bookmark.refresh_from_db()
    assert bookmark.soft_blocked and bookmark.failure_count == 3
    bookmark_clear_soft_block(bookmark=bookmark, actor=OPERATOR)
    assert post(client, issued.token, {"approved": True}).status_code == 200


@pytest.mark.parametrize("end", ["revoke", "cancel"])
def test_a_soft_blocked_bookmark_that_ended_answers_404_not_429(client, settings, end):
    from bookmarks.services import bookmark_record_failure

    instance, bookmark = suspended()
    issued = token_for(bookmark)
    for _ in range(settings.ELSA_RESUME_MAX_FAILURES):
        bookmark_record_failure(bookmark_id=bookmark.pk, reason="input_malformed", token_fingerprint="", actor=OPERATOR)
    assert post(client, issued.token).status_code == 429
    if end == "revoke":
        bookmark_revoke(bookmark=bookmark, actor=OPERATOR)
    else:
        workflow_instance_cancel(instance=instance, actor=ACTOR)
    response = post(client, issued.token)
    assert response.status_code == 404, response.content
    assert response.json()["error"]["code"] == "bookmark_gone"
    assert last_resume_event().context["reason"] in ("bookmark_revoked", "bookmark_invalidated")


# --- auto_burn false -----------------------------------------------------------------------------------


def test_non_burning_bookmark_resumes_repeatedly_until_revoked(client):
    instance = run_in_process(start_instance(loop_document()))
    bookmark = Bookmark.objects.get(instance=instance)
    issued = token_for(bookmark)
    for n in range(1, 4):
        assert post(client, issued.token, {"n": n}).status_code == 200
        instance = run_in_process(instance)
        assert instance.status == "Suspended"
        assert instance.variables["last"] == n
    assert Bookmark.objects.filter(instance=instance).count() == 1
    bookmark.refresh_from_db()
    assert bookmark.status == "active" and bookmark.resume_count == 3
    bookmark_revoke(bookmark=bookmark, actor=OPERATOR)
    assert post(client, issued.token, {"n": 4}).status_code == 404


def test_non_burning_bookmark_answers_409_while_its_workflow_has_not_come_back(client):
    instance = run_in_process(start_instance(loop_document()))
    issued = token_for(Bookmark.objects.get(instance=instance))
    assert post(client, issued.token, {"n": 1}).status_code == 200
    busy = post(client, issued.token, {"n": 2})  # the continuation has not run yet
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "not_waiting"
    assert run_in_process(instance).variables["last"] == 1
    assert post(client, issued.token, {"n": 2}).status_code == 200


# --- audit -------------------------------------------------------------------------------------------------


def test_every_attempt_is_audited_with_fingerprint_ip_and_user_agent_never_the_token(client):
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    before = chained_events().count()
    ok = post(client, issued.token, {"a": 1}, REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT="approver/1.0")
    again = post(client, issued.token, {"a": 1}, REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT="approver/1.0")
    assert (ok.status_code, again.status_code) == (200, 404)
    events = list(chained_events().filter(event_type="bookmark.resume", id__gt=before).order_by("id"))
    assert [e.result for e in events] == ["success", "failure"]
    for event in events:
        assert event.actor_type == "anonymous"
        assert event.actor_ip == "198.51.100.7"
        assert event.resource_id == str(bookmark.pk)
        assert event.context["token_fingerprint"] == issued.record.fingerprint
        assert event.context["user_agent"] == "approver/1.0"
        assert event.context["instance_id"] == str(instance.pk)
    stored = json.dumps(list(chained_events().values("context", "metadata", "resource_id", "actor_id")), default=str)
    assert issued.token not in stored
