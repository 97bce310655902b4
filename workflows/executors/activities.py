"""The HttpRequest activity: call an executor's endpoint, retrying transient failures through Reschedule."""

import re

from django.conf import settings

from elsa_site.errors import DomainError
from workflows.activities.base import Activity, ActivityContext, Done, Fault, Reschedule, register_activity
from workflows.executors.breaker import CircuitOpenError
from workflows.executors.client import FORBIDDEN_REQUEST_HEADERS, PermanentError
from workflows.executors.retry import backoff_delay
from workflows.executors.selectors import executor_get_by_name
from workflows.executors.services import executor_call

HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")


@register_activity
class HttpRequest(Activity):
    """Calls `endpoint` of `executor`; outcome Success (2xx), ClientError (4xx) or ServerError (5xx)."""

    type_name = "HttpRequest"
    outcomes = ("Success", "ClientError", "ServerError")
    required_fields = ("executor", "endpoint")
    expression_fields = ("path_params.*", "query.*", "headers.*", "body")

    def validate(self, node: dict) -> list[tuple[str, str]]:
        problems = []
        for name in ("executor", "endpoint"):
            if name in node and (not isinstance(node[name], str) or not node[name]):
                problems.append((f"/{name}", "must be a non-empty string"))
        for name in ("path_params", "query", "headers"):
            if name in node and not isinstance(node[name], dict):
                problems.append((f"/{name}", "must be an object of expressions"))
        for header in node.get("headers", {}) if isinstance(node.get("headers"), dict) else {}:
            if not HEADER_NAME_RE.match(header) or header.lower() in FORBIDDEN_REQUEST_HEADERS:
                problems.append((f"/headers/{header}", "is not a header a workflow may set"))
        return problems

    def execute(self, ctx: ActivityContext):
        node = ctx.node
        executor = executor_get_by_name(node["executor"])
        if executor is None:
            return Fault(f"Executor '{node['executor']}' does not exist.")
        values: dict[str, dict] = {}
        for name in ("path_params", "query", "headers"):
            values[name] = {key: ctx.evaluate(expr) for key, expr in (node.get(name) or {}).items()}
        body = ctx.evaluate(node["body"]) if "body" in node else None
        max_attempts = settings.ELSA_EXECUTOR_MAX_ATTEMPTS
        try:
            result = executor_call(
                executor=executor,
                endpoint=node["endpoint"],
                body=body,
                attempt=ctx.attempt,
                actor=ctx.actor,
                context={"instance_id": str(ctx.instance.pk), "activity_id": ctx.activity_id},
                path_params=values["path_params"],
                query=values["query"],
                headers=values["headers"],
            )
        except CircuitOpenError as exc:
            # Fail at once, without a request: the fault names the open circuit, and the instance
            # can be retried once the partner recovers.
            return Fault(str(exc))
        except DomainError as exc:
            return Fault(exc.message)
        except PermanentError as exc:
            return Fault(str(exc))
        if result.transient:
            delay = backoff_delay(
                ctx.attempt,
                max_attempts=max_attempts,
                base=settings.ELSA_EXECUTOR_RETRY_BASE_SECONDS,
                jitter=settings.ELSA_EXECUTOR_RETRY_JITTER,
                retry_after=result.retry_after,
                retry_after_max=settings.ELSA_EXECUTOR_RETRY_AFTER_MAX_SECONDS,
            )
            if delay is not None:
                return Reschedule(delay, reason=f"attempt {ctx.attempt + 1} of {max_attempts}: {result.error}")
            if result.kind == "credentials":
                # The identity provider failed, not the partner: the message says so and names the executor.
                return Fault(f"{result.error} Gave up after {max_attempts} attempts.")
            if result.status is None:
                return Fault(f"Calling '{executor.name}' failed after {max_attempts} attempts: {result.error}")
        status = result.status
        assert status is not None  # only a transient failure has no status, and it returned above
        output = {
            "status": status,
            "headers": result.headers,
            "body": result.body,
        }
        if result.body_too_large:
            output["body_too_large"] = True
        if 200 <= status < 300:
            return Done("Success", output)
        if status >= 500:
            return Done("ServerError", output)
        # 4xx and the rare 1xx/3xx the client cannot act on (cross-host redirects are refused earlier).
        return Done("ClientError", output)
