"""Start call_worker processes on the test database and settings, and talk to them."""

import json
import subprocess
import sys
from contextlib import contextmanager

from tests.conftest import ROOT, worker_environment

ANSWER_PREFIX = "ANSWER "


class CallWorker:
    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.other_output: list[str] = []

    def send(self, **command) -> None:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict:
        # Log lines share the pipe with the answers: answers carry a prefix, the rest is kept for errors.
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("call worker exited:\n" + "".join(self.other_output[-50:]))
            if line.startswith(ANSWER_PREFIX):
                return json.loads(line[len(ANSWER_PREFIX) :])
            self.other_output.append(line)

    def ask(self, **command) -> dict:
        self.send(**command)
        return self.receive()


@contextmanager
def call_workers(count: int, **env: str):
    """`count` separate Python processes, each with its own Django, connections and memory."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.workflows.executors.call_worker"],
            cwd=ROOT,
            env=worker_environment(**env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(count)
    ]
    workers = [CallWorker(p) for p in procs]
    try:
        for worker in workers:
            worker.receive()  # {"ready": pid}
        yield workers
    finally:
        for proc in procs:
            proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            proc.stdout.close()
