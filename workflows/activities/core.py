"""The core activity types: SetVariable, If, Switch, Fork, Join, WriteLog, Delay, SendEmail, Finish, Fault."""

import datetime as dt
import logging
import re

from django.conf import settings
from django.core.mail import send_mail
from django.utils import timezone

from elsa_site.logging import RedactingFilter
from workflows.activities.base import Activity, ActivityContext, Done, Fault, Suspend, register_activity

# Workflow authors' log lines: secret values are scrubbed by the engine before the message gets
# here, and the redacting filter on the logger itself also drops sensitive keys and tokens.
workflow_logger = logging.getLogger("elsa.workflow")
if not any(isinstance(f, RedactingFilter) for f in workflow_logger.filters):
    workflow_logger.addFilter(RedactingFilter())

LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
MAX_LOG_MESSAGE = 4000
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


@register_activity
class SetVariable(Activity):
    """Assign the value of an expression to a declared variable (encrypted if the variable is secret)."""

    uses_database = False
    has_external_effects = False
    type_name = "SetVariable"
    required_fields = ("variable", "value")
    expression_fields = ("value",)

    def validate(self, node):
        return [] if isinstance(node.get("variable"), str) else [("/variable", "must be a variable name")]

    def execute(self, ctx: ActivityContext):
        ctx.set_variable(ctx.node["variable"], ctx.evaluate(ctx.node["value"]))
        return Done()


@register_activity
class If(Activity):
    """Branch on a boolean condition."""

    uses_database = False
    has_external_effects = False
    type_name = "If"
    outcomes = ("True", "False")
    required_fields = ("condition",)
    expression_fields = ("condition",)

    def execute(self, ctx: ActivityContext):
        result = ctx.evaluate(ctx.node["condition"])
        if not isinstance(result, bool):
            return Fault(f"condition {ctx.node['condition']!r} did not evaluate to a boolean")
        return Done("True" if result else "False")


@register_activity
class Switch(Activity):
    """Take the first case whose condition holds, else Default."""

    uses_database = False
    has_external_effects = False
    type_name = "Switch"
    required_fields = ("cases",)
    expression_fields = ("cases.*.condition",)

    def node_outcomes(self, node):
        cases = node.get("cases") if isinstance(node.get("cases"), list) else []
        names = [c["name"] for c in cases if isinstance(c, dict) and isinstance(c.get("name"), str)]
        return (*names, "Default")

    def validate(self, node):
        cases = node.get("cases")
        if not isinstance(cases, list):
            return [("/cases", "must be a list of {name, condition}")]
        problems, seen = [], set()
        for index, case in enumerate(cases):
            if not isinstance(case, dict):
                problems.append((f"/cases/{index}", "must be an object with name and condition"))
                continue
            name = case.get("name")
            if not isinstance(name, str) or not name or name == "Default":
                problems.append((f"/cases/{index}/name", "must be a non-empty name other than Default"))
            elif name in seen:
                problems.append((f"/cases/{index}/name", "duplicate case name"))
            seen.add(name)
            if "condition" not in case:
                problems.append((f"/cases/{index}/condition", "is required"))
        return problems

    def execute(self, ctx: ActivityContext):
        for case in ctx.node["cases"]:
            result = ctx.evaluate(case["condition"])
            if not isinstance(result, bool):
                return Fault(f"case {case['name']!r} condition did not evaluate to a boolean")
            if result:
                return Done(case["name"])
        return Done("Default")


@register_activity
class Fork(Activity):
    """Start one parallel branch per outgoing connection."""

    uses_database = False
    has_external_effects = False
    type_name = "Fork"

    def execute(self, ctx: ActivityContext):
        return Done()


@register_activity
class Join(Activity):
    """Merge parallel branches: mode "all" waits for every incoming branch, "any" continues on the first."""

    uses_database = False
    has_external_effects = False
    type_name = "Join"
    is_join = True

    def validate(self, node):
        if node.get("mode", "all") not in ("all", "any"):
            return [("/mode", 'must be "all" or "any"')]
        return []

    def execute(self, ctx: ActivityContext):
        return Done()


@register_activity
class WriteLog(Activity):
    """Write a message to the "elsa.workflow" logger (secret values scrubbed, sensitive keys redacted)."""

    uses_database = False
    has_external_effects = False
    type_name = "WriteLog"
    required_fields = ("message",)
    expression_fields = ("message",)

    def validate(self, node):
        if node.get("level", "info") not in LOG_LEVELS:
            return [("/level", f"must be one of {', '.join(LOG_LEVELS)}")]
        return []

    def execute(self, ctx: ActivityContext):
        # Scrub known secret plaintexts: the redacting filter only knows key names and token shapes.
        # A value is scrubbed before it is rendered (its numbers too), the text again after, whole,
        # before it is cut to length.
        message = ctx.scrub(ctx.evaluate(ctx.node["message"]))
        text = message if isinstance(message, str) else repr(message)
        text = ctx.scrub(text)[:MAX_LOG_MESSAGE]
        workflow_logger.log(
            LOG_LEVELS[ctx.node.get("level", "info")],
            text,
            extra={"workflow_instance_id": str(ctx.instance.pk), "activity_id": ctx.activity_id},
        )
        return Done()


@register_activity
class Delay(Activity):
    """Wait `seconds` on a durable timer, then continue with Done."""

    uses_database = False
    has_external_effects = False
    type_name = "Delay"
    required_fields = ("seconds",)
    expression_fields = ("seconds",)

    def validate(self, node):
        seconds = node.get("seconds")
        if "seconds" in node and (isinstance(seconds, bool) or not isinstance(seconds, str | int | float)):
            return [("/seconds", "must be a number or an expression")]
        return []

    def execute(self, ctx: ActivityContext):
        seconds = ctx.evaluate(ctx.node["seconds"])
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            return Fault("seconds did not evaluate to a number")
        if seconds > settings.ELSA_WORKFLOW_MAX_DELAY_SECONDS:
            return Fault(f"a delay is limited to {settings.ELSA_WORKFLOW_MAX_DELAY_SECONDS} seconds")
        if seconds <= 0:
            return Done()
        return Suspend(resume_at=timezone.now() + dt.timedelta(seconds=float(seconds)))


@register_activity
class SendEmail(Activity):
    """Send an e-mail through Django's configured e-mail backend (secret values scrubbed)."""

    uses_database = False
    type_name = "SendEmail"
    required_fields = ("to", "subject", "body")
    expression_fields = ("to", "subject", "body")

    def execute(self, ctx: ActivityContext):
        to = ctx.evaluate(ctx.node["to"])
        recipients = [to] if isinstance(to, str) else to
        if not isinstance(recipients, list) or not recipients or len(recipients) > 50:
            return Fault("to must evaluate to an address or a list of 1 to 50 addresses")
        if not all(isinstance(r, str) and _EMAIL.match(r) for r in recipients):
            return Fault("to contains something that is not an e-mail address")
        # Secrets are scrubbed from the values, then from the whole rendered text, before anything cuts it.
        subject = ctx.scrub(str(ctx.scrub(ctx.evaluate(ctx.node["subject"]))))
        body = ctx.scrub(str(ctx.scrub(ctx.evaluate(ctx.node["body"]))))
        # Header injection: a subject is one line.
        subject = " ".join(subject.splitlines())[:300]
        send_mail(subject, body, None, recipients, fail_silently=False)
        return Done(output={"recipients": len(recipients)})


@register_activity
class Finish(Activity):
    """End the instance: every other pending branch and timer is dropped."""

    uses_database = False
    has_external_effects = False
    type_name = "Finish"
    outcomes = ()
    ends_instance = True

    def execute(self, ctx: ActivityContext):
        return Done()


@register_activity
class FaultActivity(Activity):
    """Fail the instance with a message (an expression)."""

    uses_database = False
    has_external_effects = False
    type_name = "Fault"
    outcomes = ()
    expression_fields = ("message",)

    def execute(self, ctx: ActivityContext):
        message = ctx.evaluate(ctx.node.get("message", "'faulted by the workflow'"))
        # A value is scrubbed before it is rendered; the engine scrubs the whole fault message again.
        return Fault(str(ctx.scrub(message)))
