"""Approval by e-mail through a live worker: WaitForResume mails its link, the page approves, the workflow finishes."""

import re

import httpx
import pytest

from bookmarks.models import Bookmark
from tests.bookmarks.factories import approval_document, start_instance
from tests.conftest import wait_until
from workflows.models import WorkflowInstance

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.live_worker, pytest.mark.slow]

CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def mailed(mail_dir) -> str:
    return "".join(path.read_text() for path in sorted(mail_dir.glob("*.log")))


def test_approval_by_email_finishes_the_workflow(bookmarks_worker, live_server):
    document = approval_document(
        name="purchase-approval",
        ttl_seconds=3600,
        input_schema={"type": "object", "required": ["approved"], "properties": {"approved": {"type": "boolean"}}},
        notify_email={
            "to": "'approver@example.com'",
            "subject": "'Approve purchase of ' + string(vars.amount)",
            "body": "'Please decide: ' + approve_url + '\\nAPI: ' + resume_url",
        },
    )
    instance = start_instance(document, {"amount": 1500})
    text = wait_until(lambda: mailed(bookmarks_worker.mail_dir), timeout=60, message="the approval e-mail")
    assert WorkflowInstance.objects.get(pk=instance.pk).status == "Suspended"
    assert "To: approver@example.com" in text
    assert "Subject: Approve purchase of 1500" in text
    approve_link = re.search(r"(http://\S+/elsa/approve\?t=[A-Za-z0-9_\-]+)", text).group(1)
    assert approve_link.startswith(live_server.url)
    assert re.search(r"API: http://\S+/elsa/api/bookmarks/resume\?t=", text)

    with httpx.Client(timeout=30) as browser:
        page = browser.get(approve_link)
        assert page.status_code == 200
        assert "purchase-approval" in page.text
        csrf = CSRF_FIELD.search(page.text).group(1)
        # The page alone consumed nothing (scanners prefetch links).
        assert Bookmark.objects.get(instance=instance).status == "active"
        decided = browser.post(approve_link, data={"decision": "approve", "csrfmiddlewaretoken": csrf})
        assert decided.status_code == 200, decided.text

    final = wait_until(
        lambda: (i := WorkflowInstance.objects.get(pk=instance.pk)).status == "Finished" and i,
        timeout=60,
        message="the workflow to finish",
    )
    assert final.outputs["approve"] == {"approved": True}
    assert final.variables["decision"] == {"approved": True}
    assert Bookmark.objects.get(instance=instance).status == "consumed"
    # The token travels only in the e-mail: not in the instance's state, outputs or variables.
    token = approve_link.split("t=", 1)[1]
    assert token not in str(final.state) + str(final.outputs) + str(final.variables)
