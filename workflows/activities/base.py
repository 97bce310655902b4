"""The activity plug-in API: base class, results, execution context and the type registry.

How another app adds an activity type (bookmarks' ``WaitForResume``, executors' ``HttpRequest``)::

    from workflows.activities.base import Activity, ActivityContext, Done, Fault, Reschedule, Suspend, register_activity

    @register_activity
    class HttpRequest(Activity):
        type_name = "HttpRequest"
        outcomes = ("Success", "ClientError", "ServerError")
        required_fields = ("executor", "endpoint")
        expression_fields = ("body", "query.*", "headers.*")   # CEL, compiled when a definition is saved

        def validate(self, node):                                 # optional extra checks
            return [] if isinstance(node.get("executor"), str) else [("/executor", "must be a string")]

        def execute(self, ctx: ActivityContext):
            body = ctx.evaluate(ctx.node.get("body"))
            ...
            return Done("Success", output={"status": 200})

Registration happens when the module is imported: import it from your AppConfig.ready()
(``bookmarks.apps`` and ``workflows.executors.apps`` import theirs). A definition using a type
that is not registered fails validation, and an instance reaching one is faulted.

Execution model (what the engine guarantees to an activity):

* ``execute`` runs in a Celery worker that holds the instance's run lock (a PostgreSQL session
  advisory lock, released by the server if the worker dies): no other worker runs a step of
  the same instance meanwhile. With ``uses_database = True`` (the default) it runs inside the
  step's transaction: the ActivityExecution record, the new instance state and any audit event
  commit together with whatever rows ``execute`` writes. Every step's write is fenced by the
  instance's revision: if a cancel or resume changed the instance meanwhile, the step rolls
  back and runs again on the fresh state; with ``has_external_effects = True`` (the default) the
  step holds the instance's row lock while ``execute`` runs, so those changes wait for it and
  never make it run twice. If the worker dies before the commit, the activity runs again later,
  so side effects outside the database (an e-mail, an HTTP call) are at-least-once: make them
  idempotent where you can.
* Never sleep in ``execute``: return ``Reschedule(countdown, reason)`` to be run again later,
  or ``Suspend(...)`` to wait for an outside event.
* An exception raised by ``execute`` faults the instance with the activity id and the error
  (secret values scrubbed), like ``Fault(message)``.
* Outputs are JSON values. Known secret plaintexts are replaced by ``"****"`` before an output
  is stored, logged or shown, so never rely on reading a secret back from ``outputs``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from workflows.expressions import ExpressionError, evaluate_expression

if TYPE_CHECKING:  # pragma: no cover - typing only
    from audit.actors import Actor
    from workflows.models import WorkflowInstance

__all__ = [
    "Activity",
    "ActivityContext",
    "Done",
    "ExpressionError",
    "Fault",
    "Reschedule",
    "Suspend",
    "UnknownActivityType",
    "get_activity",
    "register_activity",
    "registered_types",
]


# --- Results an activity returns -------------------------------------------------------------


@dataclass(frozen=True)
class Done:
    """Completed: continue along the connections whose ``outcome`` equals this one.

    ``output`` (any JSON value, optional) is stored as ``outputs.<activity id>`` for later
    expressions and in the ActivityExecution record (secret values masked).
    """

    outcome: str = "Done"
    output: Any = None


@dataclass(frozen=True)
class Suspend:
    """Wait: the activity stays pending and, once no other branch can run, the instance is Suspended.

    * ``data`` (JSON, optional) is kept in the instance state and passed to the
      ``instance_suspended`` signal, so a listener (bookmarks) can act on it.
    * ``resume_at`` (aware datetime, optional): the engine sets a durable timer (a Celery task
      with an ETA, plus a periodic sweep that catches timers lost in a restart) and resumes this
      activity itself at that time with ``timer_outcome`` (default ``"Done"``).
    * Anyone else continues the activity with
      ``workflows.services.workflow_instance_resume(instance=..., activity_id=..., outcome="Done",
      output=None, actor=...)``; cancelling the instance invalidates the timer.
    """

    resume_at: dt.datetime | None = None
    data: Any = None
    timer_outcome: str = "Done"


@dataclass(frozen=True)
class Fault:
    """Fail: the instance becomes Faulted with this message (prefixed with the activity id)."""

    message: str


@dataclass(frozen=True)
class Reschedule:
    """Run this same activity again after ``countdown`` seconds (a Celery task with countdown).

    ``ctx.attempt`` is 0 on the first run and grows by one per Reschedule. Each run writes its own
    ActivityExecution record (status ``Rescheduled`` with ``reason`` as the error text). The
    instance stays Running meanwhile; cancelling it drops the pending retry.
    """

    countdown: float
    reason: str = ""


Result = Done | Suspend | Fault | Reschedule


# --- The context an activity runs with -----------------------------------------------------


@dataclass
class ActivityContext:
    """What ``Activity.execute`` sees.

    * ``node``: the activity's JSON object from the definition (``{"id", "type", ...fields}``).
    * ``instance``: the WorkflowInstance (read it; the engine owns its state, do not save it).
    * ``activity_id``: ``node["id"]``. ``attempt``: 0, then +1 per Reschedule.
    * ``variables``: the decrypted variables (secret ones in plaintext: worker only, never log them).
    * ``input`` and ``outputs``: the instance input and the outputs of completed activities.
    * ``actor``: the Actor to attribute audit events to (the engine's system actor in a worker).
    * ``evaluate(expr, extra=None)``: evaluate a CEL expression over ``input``, ``vars`` and
      ``outputs`` plus the names in ``extra``; a non-string value is returned unchanged (a
      literal). A failure raises ExpressionError, which faults the instance naming the activity
      and the expression, unless the activity catches it.
    * ``set_variable(name, value)``: assign a declared variable (a secret one is encrypted when
      the step commits); later expressions of the same run see the new value in ``vars``.
    * ``secret_values()``: the plaintexts of the secret variables, to scrub from anything an
      activity sends out of the worker; ``scrub(value)`` does it for strings, lists and dicts.
    """

    node: dict
    instance: WorkflowInstance
    activity_id: str
    attempt: int
    variables: dict
    input: Any
    outputs: dict
    actor: Actor
    _secrets: frozenset[str] = field(default_factory=frozenset)
    _assigned: dict = field(default_factory=dict)

    def evaluate(self, expr: Any, extra: dict | None = None) -> Any:
        if not isinstance(expr, str):
            return expr
        context = {"input": self.input, "vars": self.variables, "outputs": self.outputs}
        if extra:
            context.update(extra)
        return evaluate_expression(expr, context)

    def set_variable(self, name: str, value: Any) -> None:
        self.variables[name] = value
        self._assigned[name] = value

    def secret_values(self) -> frozenset[str]:
        return self._secrets

    def scrub(self, value: Any) -> Any:
        from workflows.secrets import scrub_secrets

        return scrub_secrets(value, self._secrets)


# --- The base class ----------------------------------------------------------------------


class Activity:
    """Base class of every activity type; subclass it and decorate with ``@register_activity``.

    Class attributes:

    * ``type_name``: the ``type`` string used in definition documents (unique).
    * ``outcomes``: the outcome names a connection from this activity may use. Override
      ``node_outcomes(node)`` when they depend on the node (Switch: its case names).
    * ``required_fields``: top-level fields that must be present (a missing one is reported
      at ``/activities/<i>/<field>``).
    * ``expression_fields``: fields holding CEL expressions, compiled when the definition is
      saved (a compile error is a validation problem at the field's pointer). Dotted paths
      reach into objects (``"notify_email.to"``) and ``*`` matches every key or list item
      (``"cases.*.condition"``, ``"headers.*"``). Absent optional fields are skipped; a
      non-string value is a literal and is not compiled.
    """

    type_name: ClassVar[str] = ""
    outcomes: ClassVar[tuple[str, ...]] = ("Done",)
    required_fields: ClassVar[tuple[str, ...]] = ()
    expression_fields: ClassVar[tuple[str, ...]] = ()
    # True (the safe default): execute runs inside the step's transaction, so rows it writes
    # commit or roll back with the step. Set False only when execute never touches the database;
    # the engine then persists the step with a single statement, outside a transaction.
    uses_database: ClassVar[bool] = True
    # True (the safe default): execute has effects outside the database (an e-mail, an HTTP call).
    # Its step then holds the instance's row lock while it runs, so a concurrent resume, timer or
    # cancel waits for the step to commit instead of making its save stale, which would run the
    # activity (and its effect) a second time. Set False for activities that only compute.
    has_external_effects: ClassVar[bool] = True
    # Engine-internal: Join activities synchronise incoming branches before they execute.
    is_join: ClassVar[bool] = False
    # Finish ends the whole instance (every pending branch) instead of only its own branch.
    ends_instance: ClassVar[bool] = False

    def node_outcomes(self, node: dict) -> tuple[str, ...]:
        """The outcomes this node can produce (default: the class's ``outcomes``)."""
        return self.outcomes

    def validate(self, node: dict) -> list[tuple[str, str]]:
        """Extra checks of the node beyond required and expression fields.

        Return ``(pointer, message)`` pairs; the pointer is relative to the node (``"/cases/0/name"``)
        and the engine prefixes ``/activities/<index>``. Never put submitted values in messages.
        """
        return []

    def execute(self, ctx: ActivityContext) -> Result:
        """Run the activity once and say what happens next (Done, Suspend, Fault or Reschedule)."""
        raise NotImplementedError


# --- The registry --------------------------------------------------------------------------


class UnknownActivityType(LookupError):
    """No activity type is registered under this name."""


_REGISTRY: dict[str, Activity] = {}


def register_activity(cls: type[Activity]) -> type[Activity]:
    """Class decorator: make ``cls`` available under ``cls.type_name`` (re-registering replaces)."""
    if not (isinstance(cls, type) and issubclass(cls, Activity)):
        raise TypeError("register_activity expects an Activity subclass")
    if not cls.type_name:
        raise ValueError(f"{cls.__name__} has no type_name")
    _REGISTRY[cls.type_name] = cls()
    return cls


def get_activity(type_name: str) -> Activity:
    """The registered activity for ``type_name``; raises UnknownActivityType."""
    try:
        return _REGISTRY[type_name]
    except KeyError:
        raise UnknownActivityType(type_name) from None


def registered_types() -> list[str]:
    return sorted(_REGISTRY)
