"""Figure resume: valid resumes per second (each a real suspended instance, continuation enqueued) vs /health/live."""

import time

from bench.harness import figure

WARMUP = 150
DURATION = 3.0
MAX_INSTANCES = 4000
DOCUMENT = {
    "name": "bench-approval",
    "activities": [
        {"id": "approve", "type": "WaitForResume", "ttl_seconds": 3600, "input_schema": {"type": "object"}},
        {"id": "done", "type": "Finish"},
    ],
    "connections": [{"source": "approve", "target": "done"}],
}
BODY = '{"input":{"approved":true}}'


def _suspended_tokens(definition, actor, count: int) -> list[str]:
    """Start `count` instances; the bench worker runs each to its WaitForResume; mint one token per bookmark."""
    from bookmarks.models import Bookmark
    from bookmarks.services import resume_token_issue
    from workflows.models import WorkflowInstance
    from workflows.services import workflow_definition_execute

    ids = [workflow_definition_execute(definition=definition, input={}, actor=actor).pk for _ in range(count)]
    deadline = time.monotonic() + 900
    while WorkflowInstance.objects.filter(pk__in=ids, status="Suspended").count() < count:
        if time.monotonic() > deadline:
            raise RuntimeError("instances did not suspend within 900 s")
        if WorkflowInstance.objects.filter(pk__in=ids, status="Faulted").exists():
            raise RuntimeError("a benchmark instance faulted")
        time.sleep(0.1)
    bookmarks = Bookmark.objects.filter(instance_id__in=ids, status="active")
    return [resume_token_issue(bookmark=bookmark, actor=actor).token for bookmark in bookmarks]


def _resume(h, tokens: list[str], duration: float) -> dict:
    requests = [
        ("POST", f"/elsa/api/bookmarks/resume?t={token}", {"Content-Type": "application/json"}, BODY)
        for token in tokens
    ]
    return h.http_rps_requests(requests, duration=duration)


def measure(h) -> dict:
    from audit.actors import Actor
    from workflows.services import workflow_definition_create, workflow_definition_publish

    actor = Actor.system("bench")
    definition = workflow_definition_publish(
        definition=workflow_definition_create(document=DOCUMENT, actor=actor), actor=actor
    )
    warmup = _resume(h, _suspended_tokens(definition, actor, WARMUP), duration=1)  # warms both web processes
    # More suspended instances than the server can resume in DURATION, so every request is a valid
    # resume: the warm-up's request rate (its refusals are cheaper than resumes) bounds it from above.
    count = min(MAX_INSTANCES, int(warmup["rps"] * DURATION * 1.5) + 100)
    tokens = _suspended_tokens(definition, actor, count)
    result = _resume(h, tokens, duration=DURATION)
    valid = result["total"] - result["non_2xx"]
    if valid <= 0:
        raise RuntimeError(f"no valid resume in {result['total']} requests")
    valid_rps = result["rps"] * valid / result["total"]
    return figure(
        "resume",
        valid_rps,
        h.baseline("health"),
        "resumes/s",
        f"POST bookmarks/resume, {valid} valid of {result['total']} ({len(tokens)} tokens), each a suspended "
        "instance whose "
        "continuation is enqueued; rate limit raised; baseline = anonymous /health/live",
    )
