"""WaitForResume in-process: bookmark lifetime (default, ttl_seconds, expires_at), reuse, and its e-mail."""

import datetime as dt
import json
import re

import pytest
from django.core import mail
from django.utils import timezone

from bookmarks.models import Bookmark, ResumeToken
from bookmarks.tokens import resume_token_fingerprint
from tests.bookmarks.factories import approval_document, loop_document, run_in_process, start_instance, suspended
from tests.workflows.factories import ACTOR
from workflows.models import ActivityExecution
from workflows.services import workflow_instance_resume

pytestmark = pytest.mark.django_db


def close_to(value: dt.datetime, expected: dt.datetime, seconds: int = 30) -> bool:
    return abs((value - expected).total_seconds()) < seconds


def test_default_lifetime_is_the_configured_default(settings):
    settings.ELSA_BOOKMARK_DEFAULT_TTL_SECONDS = 7200
    _, bookmark = suspended()
    assert close_to(bookmark.expires_at, timezone.now() + dt.timedelta(seconds=7200))
    assert bookmark.auto_burn is True and bookmark.on_expiry == "fault"


def test_ttl_seconds_sets_the_lifetime():
    _, bookmark = suspended(approval_document(ttl_seconds=600, auto_burn=False, on_expiry="timeout"))
    assert close_to(bookmark.expires_at, timezone.now() + dt.timedelta(seconds=600))
    assert bookmark.auto_burn is False and bookmark.on_expiry == "timeout"


def test_expires_at_sets_an_absolute_expiry():
    at = (timezone.now() + dt.timedelta(hours=5)).replace(microsecond=0)
    _, bookmark = suspended(approval_document(expires_at=at.isoformat()))
    assert bookmark.expires_at == at


def test_an_expires_at_in_the_past_faults_the_instance():
    at = (timezone.now() - dt.timedelta(minutes=1)).isoformat()
    instance = run_in_process(start_instance(approval_document(expires_at=at)))
    assert instance.status == "Faulted"
    assert "expires_at" in instance.fault_message
    assert not Bookmark.objects.filter(instance=instance).exists()


def test_without_notify_email_no_token_is_minted():
    _, bookmark = suspended()
    assert not ResumeToken.objects.filter(bookmark=bookmark).exists()


def test_notify_email_sends_both_links_after_the_step_commits(django_capture_on_commit_callbacks, settings):
    settings.ELSA_PUBLIC_URL = "https://flows.example.com"
    document = approval_document(
        notify_email={
            "to": "['a@example.com', 'b@example.com']",
            "subject": "'Approve\\nBcc: evil@example.net'",
            "body": "'Open ' + approve_url + ' or call ' + resume_url",
        }
    )
    with django_capture_on_commit_callbacks(execute=True):
        instance = run_in_process(start_instance(document))
    assert instance.status == "Suspended"
    [message] = mail.outbox
    assert message.to == ["a@example.com", "b@example.com"]
    assert message.subject == "Approve Bcc: evil@example.net"  # folded onto one line: no header injection
    token_record = ResumeToken.objects.get(bookmark__instance=instance)
    approve = re.search(r"https://flows\.example\.com/elsa/approve\?t=(\S+)", message.body).group(1)
    resume = re.search(r"https://flows\.example\.com/elsa/api/bookmarks/resume\?t=(\S+)", message.body).group(1)
    assert approve == resume
    assert resume_token_fingerprint(approve) == token_record.fingerprint


@pytest.mark.parametrize(
    "body",
    [
        "string(duration(resume_url))",  # CEL's error quotes the whole URL
        "string(duration(approve_url + approve_url + approve_url + approve_url))",  # cut at 500 characters
        "{'k': 1}[approve_url + 'x']",  # a map lookup quotes the missing key
    ],
)
def test_a_failing_notify_expression_keeps_the_links_out_of_the_fault(body):
    document = approval_document(notify_email={"to": "'a@example.com'", "subject": "'x'", "body": body})
    instance = run_in_process(start_instance(document))
    assert instance.status == "Faulted"
    assert "****" in instance.fault_message
    executions = list(ActivityExecution.objects.filter(instance=instance).values_list("error", flat=True))
    stored = json.dumps([instance.fault_message, instance.state, executions])
    assert "t=" not in stored.replace("t=****", "")
    assert not re.search(r"gAAAA[A-Za-z0-9_-]{8}", stored), stored


def test_a_loop_reuses_its_non_burning_bookmark():
    instance = run_in_process(start_instance(loop_document()))
    first = Bookmark.objects.get(instance=instance)
    workflow_instance_resume(instance=instance, activity_id="approve", output={"n": 1}, actor=ACTOR)
    instance = run_in_process(instance)
    assert instance.status == "Suspended"
    assert list(Bookmark.objects.filter(instance=instance)) == [first]
