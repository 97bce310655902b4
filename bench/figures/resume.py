"""Figure resume: valid resumes per second (each a real suspended instance, continuation enqueued) vs /health/live."""

import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

from bench.harness import figure

WARMUP = 150
DURATION = 3.0
ROUNDS = 3
MAX_INSTANCES = 3000  # per round
RESUME_SHARE_BOUND = 0.5  # resumes/s never came near half of /health/live's rate (at most 0.26 so far)
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


def _finished_count(definition) -> int:
    from workflows.models import WorkflowInstance

    return WorkflowInstance.objects.filter(definition=definition, status="Finished").count()


def _finished_after_resume(definition, expected: int) -> int:
    """Wait until every resumed instance finished; how many did (a resumed instance never stays Running)."""
    from workflows.models import WorkflowInstance

    instances = WorkflowInstance.objects.filter(definition=definition)
    deadline = time.monotonic() + 300
    while instances.filter(status="Running").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("resumed instances did not finish within 300 s")
        time.sleep(0.2)
    finished = _finished_count(definition)
    # At least: requests still in flight when wrk stops resume too, but wrk does not count them.
    if finished < expected:
        raise RuntimeError(f"{finished} instances finished, {expected} were resumed")
    return finished


def _group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in a process group (Linux /proc; 0.0 elsewhere)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ..., utime (12), stime (13)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@contextmanager
def _worker_paused(pgid: int):
    """Stop the worker's whole process group (SIGSTOP) and continue it afterwards (SIGCONT).

    The figure is the resume endpoint's rate: each valid resume commits the bookmark's burn and
    enqueues the continuation (the issue's definition), and the server is compared with /health/live
    measured on the same, otherwise idle, host. Continuations wait in the broker meanwhile and are
    all run to Finished after the window (checked below), so none is skipped, only not overlapped.
    """
    os.killpg(pgid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pgid, signal.SIGCONT)


def _resume(h, tokens: list[str], duration: float) -> dict:
    requests = [
        ("POST", f"/elsa/api/bookmarks/resume?t={token}", {"Content-Type": "application/json"}, BODY)
        for token in tokens
    ]
    return h.http_rps_requests(requests, duration=duration)


def _round(h, definition, tokens: list[str]) -> dict:
    """One round: /health/live, then resumes, with the worker paused for both; then every
    continuation the round enqueued runs to Finished before the next round starts."""
    # The server and the worker each run in a process group of their own (the harness's _spawn).
    web, worker = (proc.pid for proc in h._procs[:2])
    finished_before = _finished_count(definition)
    with _worker_paused(worker):
        health = h.http_rps("/health/live", duration=DURATION)
        web_before, worker_before = _group_cpu_seconds(web), _group_cpu_seconds(worker)
        result = _resume(h, tokens, duration=DURATION)
        web_cpu = _group_cpu_seconds(web) - web_before
    valid = result["total"] - result["non_2xx"]
    if valid <= 0:
        raise RuntimeError(f"no valid resume in {result['total']} requests")
    # The worker was paused during the window: now it runs every continuation the window enqueued;
    # check that each valid resume really continued to the end. Requests still in flight when wrk
    # stopped resumed and continued too, so at least `valid` instances finish.
    finished = _finished_after_resume(definition, expected=finished_before + valid) - finished_before
    return {
        "health": health,
        "rps": result["rps"] * valid / result["total"],
        "valid": valid,
        "total": result["total"],
        "finished": finished,
        "web_cpu": web_cpu,
        "worker_cpu": _group_cpu_seconds(worker) - worker_before,
    }


def measure(h) -> dict:
    from audit.actors import Actor
    from workflows.services import workflow_definition_create, workflow_definition_publish

    actor = Actor.system("bench")
    definition = workflow_definition_publish(
        definition=workflow_definition_create(document=DOCUMENT, actor=actor), actor=actor
    )
    warmup = _resume(h, _suspended_tokens(definition, actor, WARMUP), duration=1)  # warms both web processes
    _finished_after_resume(definition, expected=warmup["total"] - warmup["non_2xx"])
    # More suspended instances per round than the server can resume in DURATION, so every request
    # is a valid resume (wrk cycles through its list: a token used twice is refused, and counted
    # apart). The warm-up's rate alone fell short when the warm-up itself ran cold; half the health
    # check's rate is far above any resume rate measured here, so the larger of the two is taken.
    rate_bound = max(warmup["rps"], RESUME_SHARE_BOUND * h.baseline("health"))
    count = min(MAX_INSTANCES, int(rate_bound * DURATION * 1.5) + 100)
    tokens = _suspended_tokens(definition, actor, count * ROUNDS)
    # Rounds of (/health/live, resumes), as the auth figures alternate: the machine's speed drifts
    # over a run, so each resume window is set beside a health window taken moments before it.
    rounds = [_round(h, definition, tokens[n * count : (n + 1) * count]) for n in range(ROUNDS)]
    requests = sum(r["total"] for r in rounds)
    web_cpu = sum(r["web_cpu"] for r in rounds) / requests
    worker_cpu = sum(r["worker_cpu"] for r in rounds) / max(1, sum(r["finished"] for r in rounds))
    return figure(
        "resume",
        sum(r["rps"] for r in rounds) / ROUNDS,
        sum(r["health"] for r in rounds) / ROUNDS,
        "resumes/s",
        f"POST bookmarks/resume, {sum(r['valid'] for r in rounds)} valid of {requests} ({len(tokens)} tokens), "
        "each a suspended instance whose continuation is enqueued (worker paused in the window, then all "
        f"{sum(r['finished'] for r in rounds)} ran to Finished); interleaved with /health/live, "
        f"{ROUNDS}x{DURATION:.0f}s: "
        + ", ".join(f"{r['rps']:.0f}/{r['health']:.0f}" for r in rounds)
        + f"; CPU per resume: server {1000 * web_cpu:.1f} ms, worker {1000 * worker_cpu:.1f} ms; "
        "rate limit raised",
    )
