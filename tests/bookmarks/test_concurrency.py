"""Single use under real concurrency: 20 simultaneous resumes over HTTP, one wins, the workflow continues once."""

import json
import threading
import urllib.error
import urllib.request

import pytest

from bookmarks.models import Bookmark
from bookmarks.services import resume_token_issue
from tests.audit_log import chained_events
from tests.bookmarks.factories import OPERATOR, approval_document, start_instance
from tests.conftest import wait_until
from workflows.models import ActivityExecution, WorkflowInstance

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.live_worker, pytest.mark.slow]

CONCURRENCY = 20


def resume(url: str, barrier: threading.Barrier, results: list, index: int) -> None:
    request = urllib.request.Request(
        url, data=json.dumps({"input": {"n": index}}).encode(), headers={"Content-Type": "application/json"}
    )
    barrier.wait(timeout=30)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            results[index] = (response.status, json.loads(response.read()))
    except urllib.error.HTTPError as error:
        results[index] = (error.code, json.loads(error.read()))


def test_twenty_simultaneous_resumes_give_one_200_and_nineteen_404(bookmarks_worker, live_server):
    instance = start_instance(approval_document())
    wait_until(
        lambda: WorkflowInstance.objects.get(pk=instance.pk).status == "Suspended",
        timeout=60,
        message="the worker to suspend the instance",
    )
    bookmark = Bookmark.objects.get(instance=instance)
    issued = resume_token_issue(bookmark=bookmark, actor=OPERATOR)
    url = f"{live_server.url}/elsa/api/bookmarks/resume?t={issued.token}"

    barrier = threading.Barrier(CONCURRENCY)
    results: list = [None] * CONCURRENCY
    threads = [threading.Thread(target=resume, args=(url, barrier, results, i)) for i in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [404] * (CONCURRENCY - 1), results
    winner = next(body for status, body in results if status == 200)
    assert winner["instance_id"] == str(instance.pk)

    final = wait_until(
        lambda: (i := WorkflowInstance.objects.get(pk=instance.pk)).status == "Finished" and i,
        timeout=60,
        message=f"the continuation to finish the instance: {bookmarks_worker.log()[-3000:]}",
    )
    # Continued exactly once: one completion of the waiting activity, one run of the next one.
    assert ActivityExecution.objects.filter(instance=instance, activity_id="approve").count() == 1
    assert ActivityExecution.objects.filter(instance=instance, activity_id="after").count() == 1
    winning_input = final.outputs["approve"]
    assert final.variables["decision"] == winning_input
    bookmark.refresh_from_db()
    assert bookmark.status == "consumed" and bookmark.resume_count == 1
    attempts = chained_events().filter(event_type="bookmark.resume", resource_id=str(bookmark.pk))
    assert attempts.filter(result="success").count() == 1
    assert attempts.filter(result="failure", context__reason="bookmark_consumed").count() == CONCURRENCY - 1
