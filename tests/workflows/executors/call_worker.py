"""A worker process for multi-process executor tests: reads JSON commands on stdin, answers on stdout.

Run as `python -m tests.workflows.executors.call_worker` with the test settings and database (breaker
settings come from the environment, like a real worker's); each line {"op": "call"|"token"|"state",
"executor_id", ...} gets one "ANSWER {json}" line back.
"""

import json
import os
import sys
import time


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "elsa_site.settings.test")
    import django

    django.setup()
    from audit.actors import Actor
    from workflows.executors import oidc
    from workflows.executors.breaker import CircuitBreaker, CircuitOpenError
    from workflows.executors.credentials import executor_secrets
    from workflows.executors.models import Executor
    from workflows.executors.services import executor_call

    print("ANSWER " + json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        executor = Executor.objects.get(pk=command["executor_id"])
        if command.get("start_at"):
            # Start together with the other workers (a shared wall-clock instant), not one after another.
            time.sleep(max(0.0, command["start_at"] - time.time()))
        try:
            if command["op"] == "token":
                answer = {"token": oidc.access_token(executor, executor_secrets(executor))}
            elif command["op"] == "state":
                answer = {"state": CircuitBreaker(executor).state()}
            else:
                result = executor_call(executor=executor, endpoint=command["endpoint"], actor=Actor.system("test"))
                answer = {"kind": result.kind, "status": result.status, "breaker": result.breaker_state}
        except CircuitOpenError as exc:
            answer = {"kind": "circuit_open", "error": str(exc)}
        print("ANSWER " + json.dumps({"pid": os.getpid(), **answer}), flush=True)


if __name__ == "__main__":
    main()
