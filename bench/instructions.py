"""`make bench-instructions`: CPU instructions per operation in this project's Python, counted by callgrind.

The benchmark figures (bench/run.py) are rates on a shared 2-core machine whose speed moves by tens
of percent from one minute to the next, so a change worth a few percent cannot be seen in them.
This counts instead: each scenario runs in one process under `valgrind --tool=callgrind` with
instrumentation switched on only around its measured loop (`callgrind_control -i`), and prints the
instructions executed per operation. The count is repeatable (within about 1% from run to run: the
audit chainer thread's passes fall a little differently) and does not depend on the machine's load.
It covers the Python process only, with its threads: not PostgreSQL, Redis or the kernel's share.

    .venv/bin/python bench/instructions.py [SCENARIO ...] [--n N]

Scenarios (`SCENARIOS`): `health` and `resume` through the WSGI application (middleware, DRF, the
view; no gunicorn), `start` and `run` (the two halves of a workflow of the `workflow` figure: the
execute service, and the engine's run of the five steps), `send` (the engine's publish of a run
message), `ping` (the no-op task's publish, the `workflow` baseline's), `append` (one audit event in
its own transaction, as the `audit_append` writers record it). The database is `elsa_instructions`
(dropped and created); Redis databases 13 and 14; nothing consumes the queue.
"""

import argparse
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATABASE = "elsa_instructions"
ENV = {
    "DJANGO_SETTINGS_MODULE": "elsa_site.settings",
    "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DATABASE}",
    "CACHE_URL": "redis://127.0.0.1:6379/13",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/14",
    "CELERY_RESULT_BACKEND": "redis://127.0.0.1:6379/14",
    "ELSA_CELERY_QUEUE": "elsa-instructions",
    "ELSA_RESUME_RATE": "1000000000/m",
    "ELSA_LOG_LEVEL": "WARNING",
    "ELSA_PUBLIC_URL": "http://127.0.0.1:8000",
}
SCENARIOS = ("health", "resume", "start", "run", "send", "ping", "append")
WARMUP = 20
_TOTALS = re.compile(r"^totals:\s+(\d+)", re.MULTILINE)


# --- Inside valgrind: one scenario -------------------------------------------------------------


def _wsgi(application, environ: dict) -> None:
    environ = {
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "bench-instructions",
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        **environ,
    }
    status: list[str] = []
    body = application(environ, lambda line, headers, *exc: status.append(line))
    b"".join(body)
    body.close()
    if not status[0].startswith("200"):
        raise RuntimeError(f"{environ['PATH_INFO']} answered {status[0]}")


def _operations(scenario: str, count: int) -> tuple:
    """(operation, items): the operation is called once per item; the first WARMUP items are not counted."""
    import uuid

    from audit.actors import Actor
    from bench.figures import resume as resume_figure
    from bench.figures import workflow as workflow_figure
    from workflows import runtime
    from workflows.services import workflow_definition_create, workflow_definition_execute, workflow_definition_publish

    actor = Actor.system("bench-instructions")

    def definition(document):
        created = workflow_definition_create(document=document, actor=actor)
        return workflow_definition_publish(definition=created, actor=actor)

    total = count + WARMUP
    if scenario in ("start", "run"):
        five_steps = definition(workflow_figure.DOCUMENT)

        def start(_item):
            return workflow_definition_execute(definition=five_steps, input={"amount": 5000}, actor=actor)

        if scenario == "start":
            return start, range(total)
        return runtime.run_instance, [start(n).pk for n in range(total)]
    if scenario == "send":
        return (lambda run_id: runtime.send(runtime.RUN_TASK, [run_id])), [str(uuid.uuid4()) for _ in range(total)]
    if scenario == "ping":
        from elsa_site.celery import ping

        return (lambda _item: ping.apply_async()), range(total)
    if scenario == "append":
        from django.db import transaction

        from audit.services import audit_record

        def append(number):
            with transaction.atomic():
                audit_record(
                    event_type="bench.append",
                    action="appended",
                    resource=("writer", "w"),
                    actor=Actor.system("w"),
                    context={"n": number},
                )

        return append, range(total)
    from elsa_site.wsgi import application

    if scenario == "health":
        get = {"REQUEST_METHOD": "GET", "PATH_INFO": "/health/live", "QUERY_STRING": ""}
        return (lambda _item: _wsgi(application, {**get, "wsgi.input": io.BytesIO(b"")})), range(total)
    if scenario != "resume":
        raise SystemExit(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}")
    from bookmarks.models import Bookmark
    from bookmarks.services import resume_token_issue

    approval = definition(resume_figure.DOCUMENT)
    ids = [workflow_definition_execute(definition=approval, input={}, actor=actor).pk for _ in range(total)]
    for instance_id in ids:
        runtime.run_instance(instance_id)  # to its WaitForResume
    bookmarks = Bookmark.objects.filter(instance_id__in=ids, status="active")
    tokens = [resume_token_issue(bookmark=bookmark, actor=actor).token for bookmark in bookmarks]
    if len(tokens) != total:
        raise RuntimeError(f"{len(tokens)} of {total} instances suspended")
    body = resume_figure.BODY.encode()

    def resume(token):
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/elsa/api/bookmarks/resume",
            "QUERY_STRING": f"t={token}",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
        }
        _wsgi(application, environ)

    return resume, tokens


def _instrument(on: bool) -> None:
    subprocess.run(
        ["callgrind_control", "-i", "on" if on else "off", str(os.getpid())],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def inner(scenario: str, count: int) -> None:
    import django

    django.setup()
    operation, items = _operations(scenario, count)
    items = list(items)
    for item in items[:WARMUP]:
        operation(item)
    _instrument(True)
    for item in items[WARMUP:]:
        operation(item)
    _instrument(False)


# --- Outside: prepare, run each scenario under callgrind, print ---------------------------------


def _prepare() -> None:
    env = {**os.environ, **ENV}
    for command in (
        ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", "--force", DATABASE],
        ["createdb", "-h", "127.0.0.1", "-U", "postgres", DATABASE],
        ["redis-cli", "-n", "13", "flushdb"],
        ["redis-cli", "-n", "14", "flushdb"],
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
    ):
        subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def instructions_per_operation(scenario: str, count: int) -> float:
    with tempfile.TemporaryDirectory(prefix="elsa-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out.%p"  # one file per process: the toggling forks
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={out}",
                "-q",
                sys.executable,
                __file__,
                "--inner",
                scenario,
                "--n",
                str(count),
            ],
            cwd=ROOT,
            env={**os.environ, **ENV},
            check=True,
        )
        totals = [_TOTALS.search(path.read_text(errors="replace")) for path in Path(tmp).glob("callgrind.out.*")]
        if not any(totals):
            raise RuntimeError(f"no instruction total in callgrind's output for {scenario}")
        # The scenario's process: a forked child (callgrind_control) counts next to nothing.
        return max(int(found.group(1)) for found in totals if found) / count


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    parser.add_argument("--n", type=int, default=100, help="operations counted per scenario")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        inner(args.scenarios[0], args.n)
        return 0
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; one of {', '.join(SCENARIOS)}")
    _prepare()
    counts = {}
    for scenario in args.scenarios:
        started = time.monotonic()
        counts[scenario] = instructions_per_operation(scenario, args.n)
        seconds = time.monotonic() - started
        print(f"{scenario:<8}{counts[scenario]:>14,.0f} instructions/op  ({seconds:.0f} s)", flush=True)
    if "health" in counts and "resume" in counts:
        print(f"resume / health: {counts['resume'] / counts['health']:.2f} (Python only)")
    if {"start", "run", "ping"} <= counts.keys():
        print(f"(start + run) / ping: {(counts['start'] + counts['run']) / counts['ping']:.2f} (Python only)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
