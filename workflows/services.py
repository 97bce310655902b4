"""Writes of the workflows app: definitions and their versions, executing, resuming and cancelling instances."""

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.actors import Actor
from audit.services import audit_record
from elsa_site.errors import Conflict, InvalidInput, NotFound
from workflows import runtime, signals
from workflows.activities.base import UnknownActivityType, get_activity
from workflows.models import (
    MASK,
    ActivityExecution,
    InstanceStatus,
    WorkflowDefinition,
    WorkflowDefinitionVersion,
    WorkflowInstance,
)
from workflows.secrets import encrypt_value
from workflows.validation import input_problems, unstorable_problems, validate_document

IDEMPOTENCY_KEY_MAX = 255


def _definition_event(definition: WorkflowDefinition, verb: str, actor: Actor, version: int | None = None) -> None:
    audit_record(
        event_type=f"workflow.definition.{verb}",
        action=verb,
        resource=("workflow-definition", str(definition.pk)),
        actor=actor,
        context={"name": definition.name, **({"version": version} if version is not None else {})},
    )


def _validated(document: Any) -> dict:
    problems = validate_document(document)
    if problems:
        raise InvalidInput("The workflow definition is not valid.", code="invalid_definition", details=problems)
    return document


def _locked(definition: WorkflowDefinition) -> WorkflowDefinition:
    locked = WorkflowDefinition.objects.select_for_update().filter(pk=definition.pk).first()
    if locked is None:
        raise NotFound("Workflow definition not found.")
    return locked


@transaction.atomic
def workflow_definition_create(*, document: Any, actor: Actor) -> WorkflowDefinition:
    """Validate and store a new definition with its first (draft) version."""
    document = _validated(document)
    now = timezone.now()
    definition = WorkflowDefinition.objects.create(
        name=document["name"], latest_version=1, created_at=now, updated_at=now
    )
    WorkflowDefinitionVersion.objects.create(definition=definition, version=1, document=document, created_at=now)
    _definition_event(definition, "created", actor, 1)
    return definition


@transaction.atomic
def workflow_definition_update(*, definition: WorkflowDefinition, document: Any, actor: Actor) -> WorkflowDefinition:
    """Validate and store the document as a new draft version (the published version keeps running)."""
    document = _validated(document)
    # The row lock serializes concurrent edits, so version numbers never collide.
    definition = _locked(definition)
    definition.latest_version += 1
    definition.name = document["name"]
    definition.updated_at = timezone.now()
    definition.save(update_fields=["latest_version", "name", "updated_at"])
    WorkflowDefinitionVersion.objects.create(
        definition=definition, version=definition.latest_version, document=document
    )
    _definition_event(definition, "updated", actor, definition.latest_version)
    return definition


@transaction.atomic
def workflow_definition_publish(
    *, definition: WorkflowDefinition, actor: Actor, version: int | None = None
) -> WorkflowDefinition:
    """Make a version (default: the latest) the one new instances run."""
    definition = _locked(definition)
    target = definition.versions.filter(version=version or definition.latest_version).first()
    if target is None:
        raise NotFound("Workflow definition version not found.")
    if definition.published_version_id == target.pk:
        return definition  # already the published version: nothing changes, nothing to audit
    # Re-validate: an activity type used by this version may have been unregistered since it was saved.
    _validated(target.document)
    now = timezone.now()
    WorkflowDefinitionVersion.objects.filter(
        definition=definition, status=WorkflowDefinitionVersion.Status.PUBLISHED
    ).update(status=WorkflowDefinitionVersion.Status.SUPERSEDED)
    target.status = WorkflowDefinitionVersion.Status.PUBLISHED
    target.published_at = now
    target.save(update_fields=["status", "published_at"])
    definition.published_version = target
    definition.updated_at = now
    definition.save(update_fields=["published_version", "updated_at"])
    _definition_event(definition, "published", actor, target.version)
    return definition


@transaction.atomic
def workflow_definition_retract(*, definition: WorkflowDefinition, actor: Actor) -> WorkflowDefinition:
    """Stop new instances of the definition; running instances keep their version."""
    definition = _locked(definition)
    if definition.published_version_id is None:
        raise Conflict("The workflow definition is not published.", code="not_published")
    version = definition.published_version
    version.status = WorkflowDefinitionVersion.Status.RETRACTED
    version.save(update_fields=["status"])
    definition.published_version = None
    definition.updated_at = timezone.now()
    definition.save(update_fields=["published_version", "updated_at"])
    _definition_event(definition, "retracted", actor, version.version)
    return definition


@transaction.atomic
def workflow_definition_delete(*, definition: WorkflowDefinition, actor: Actor) -> None:
    """Delete a definition, its versions and its finished instances; refused while instances are live."""
    definition = _locked(definition)
    if definition.instances.filter(status__in=(InstanceStatus.RUNNING, InstanceStatus.SUSPENDED)).exists():
        raise Conflict(
            "The workflow definition has running or suspended instances; cancel them first.", code="has_live_instances"
        )
    _definition_event(definition, "deleted", actor)
    definition.delete()


def _idempotent_instance(actor: Actor, key: str) -> WorkflowInstance | None:
    return WorkflowInstance.objects.filter(
        created_by_type=actor.type, created_by_id=actor.id, idempotency_key=key
    ).first()


def workflow_definition_execute(
    *, definition: WorkflowDefinition, input: Any, actor: Actor, idempotency_key: str | None = None
) -> WorkflowInstance:
    """Start an instance of the published version; it runs in a worker once this transaction commits.

    With an idempotency key, the same caller gets the instance it started first with that key
    (also when two requests race: the unique constraint decides, the loser reads the winner).

    Without a key, outside a transaction, on PostgreSQL, the start's only write is one statement
    (the instance and its `started` event, runtime.insert_instance), atomic by itself: it runs in
    autocommit, without a BEGIN and a COMMIT round trip, and the run is enqueued once it returns
    (on_commit outside a transaction runs at once). Otherwise the start is one transaction.
    """
    db = transaction.get_connection()
    if idempotency_key is None and not db.in_atomic_block and db.vendor == "postgresql":
        return _execute(definition=definition, input=input, actor=actor, idempotency_key=None)
    with transaction.atomic():
        return _execute(definition=definition, input=input, actor=actor, idempotency_key=idempotency_key)


def _execute(
    *, definition: WorkflowDefinition, input: Any, actor: Actor, idempotency_key: str | None
) -> WorkflowInstance:
    if idempotency_key is not None:
        if not idempotency_key or len(idempotency_key) > IDEMPOTENCY_KEY_MAX:
            raise InvalidInput(f"The Idempotency-Key must have 1 to {IDEMPOTENCY_KEY_MAX} characters.")
        existing = _idempotent_instance(actor, idempotency_key)
        if existing is not None:
            return existing
    version = definition.published_version
    if version is None:
        raise Conflict("The workflow definition has no published version.", code="not_published")
    input = {} if input is None else input
    if not isinstance(input, dict):
        raise InvalidInput(
            "The input must be a JSON object.", details=[{"pointer": "/input", "message": "must be an object"}]
        )
    document = version.document
    problems = unstorable_problems(input, ("input",)) or input_problems(document.get("input_schema"), input)
    if problems:
        raise InvalidInput("The input does not match the input schema.", details=problems)

    graph = runtime.graph_of(version.pk)
    stored_input, secret_variables = dict(input), {}
    for name in graph.secret_variables:
        # A secret variable takes its value from input.<name>; only its ciphertext is stored,
        # and the stored input keeps "****" in its place.
        if name in input:
            secret_variables[name] = encrypt_value(input[name])
            stored_input[name] = MASK
    now = timezone.now()
    instance = WorkflowInstance(
        definition=definition,
        definition_version=version,
        status=InstanceStatus.RUNNING,
        input=stored_input,
        secret_variables=secret_variables,
        state={"tokens": [{"a": graph.start, "from": None}], "waiting": {}, "joins": {}},
        created_by_type=actor.type,
        created_by_id=actor.id,
        idempotency_key=idempotency_key,
        created_at=now,
        updated_at=now,
    )
    # The instance is inserted with its `started` audit event (one statement on PostgreSQL).
    if idempotency_key is None:
        runtime.insert_instance(instance, actor=actor)
    else:
        try:
            # A savepoint, so the race's loser can still read the winner in this transaction; the
            # loser's event goes with its insert.
            with transaction.atomic():
                runtime.insert_instance(instance, actor=actor)
        except IntegrityError:
            existing = _idempotent_instance(actor, idempotency_key)
            if existing is None:
                raise
            return existing
    runtime.enqueue_run(instance.pk)
    return instance


def _locked_instance(instance: WorkflowInstance) -> WorkflowInstance:
    locked = WorkflowInstance.objects.select_for_update().filter(pk=instance.pk).first()
    if locked is None:
        raise NotFound("Workflow instance not found.")
    return locked


def workflow_instance_resume(
    *,
    instance: WorkflowInstance,
    activity_id: str,
    outcome: str = "Done",
    output: Any = None,
    actor: Actor,
    locked: bool = False,
) -> WorkflowInstance:
    """Continue a waiting activity with an outcome and output; the run goes on in a worker after commit.

    locked=True: the caller read `instance` with SELECT ... FOR UPDATE in the transaction it has
    open, and lets any refusal here roll that whole transaction back. The instance is then checked
    as read, without a second locking read or a savepoint (three round trips on every resume).
    """
    if locked and not transaction.get_connection().in_atomic_block:
        # Without the caller's transaction the row lock it claims to hold was already released.
        raise RuntimeError("workflow_instance_resume(locked=True) must run inside the caller's transaction.")
    with transaction.atomic(savepoint=not locked):
        if not locked:
            instance = _locked_instance(instance)
        _check_resumable(instance, activity_id, outcome, output)
        runtime.resume_locked(instance, activity_id=activity_id, outcome=outcome, output=output, actor=actor)
    return instance


def workflow_instance_resume_fenced(
    *,
    instance: WorkflowInstance,
    activity_id: str,
    outcome: str = "Done",
    output: Any = None,
    actor: Actor,
    fence: runtime.Fence,
) -> WorkflowInstance | None:
    """workflow_instance_resume for an instance read without a lock, saved as one fenced statement.

    For a caller with conditions of its own (a bookmark still live, say): `fence` adds them, and
    the caller's writes and audit events, to the statement (runtime.Fence). The same checks and
    refusals as workflow_instance_resume. None when the change was not made: the instance or the
    fence's check moved on since they were read, a receiver of instance_resumed would write (it
    must get a transaction), or the database is not PostgreSQL. The caller then resumes with
    workflow_instance_resume in a transaction, from a fresh read.
    """
    if not runtime.on_postgresql() or signals.instance_resumed.acts_for(instance):
        return None
    _check_resumable(instance, activity_id, outcome, output)
    applied = runtime.resume_fenced(
        instance, activity_id=activity_id, outcome=outcome, output=output, actor=actor, fence=fence
    )
    return instance if applied else None


def _check_resumable(instance: WorkflowInstance, activity_id: str, outcome: str, output: Any) -> None:
    if not instance.is_live:
        raise Conflict(f"A {instance.status} workflow instance cannot be resumed.", code="illegal_transition")
    if activity_id not in instance.state.get("waiting", {}):
        raise Conflict("That activity is not waiting.", code="not_waiting")
    node = runtime.graph_of(instance.definition_version_id).nodes.get(activity_id, {})
    try:
        allowed = get_activity(node.get("type", "")).node_outcomes(node)
    except UnknownActivityType:
        allowed = ()
    if outcome not in allowed:
        raise InvalidInput("The activity has no such outcome.", code="invalid_outcome")
    # The output is stored in the run state: what the database cannot hold is refused here (400).
    problems = unstorable_problems(output, ("input",))
    if problems:
        raise InvalidInput("The input cannot be stored.", details=problems)


@transaction.atomic
def workflow_instance_cancel(*, instance: WorkflowInstance, actor: Actor) -> WorkflowInstance:
    """Cancel a live instance: pending branches and timers are dropped, listeners revoke its bookmarks."""
    instance = _locked_instance(instance)
    now = timezone.now()
    events = runtime.change_status(instance, InstanceStatus.CANCELLED, now=now)
    runtime.save_state(instance, now)
    instance.executions.filter(status=ActivityExecution.Status.SUSPENDED).update(
        status=ActivityExecution.Status.CANCELLED, finished_at=now
    )
    runtime.emit_status_events(instance, events, actor=actor)
    return instance


@transaction.atomic
def workflow_instance_delete(*, instance: WorkflowInstance, actor: Actor) -> None:
    """Delete a finished, faulted or cancelled instance with its executions; live ones must be cancelled first."""
    instance = _locked_instance(instance)
    if instance.is_live:
        raise Conflict("A live workflow instance cannot be deleted; cancel it first.", code="instance_live")
    audit_record(
        event_type="workflow.instance.deleted",
        action="deleted",
        resource=("workflow-instance", str(instance.pk)),
        actor=actor,
        context={"definition_id": str(instance.definition_id), "status": instance.status},
    )
    instance.delete()


@transaction.atomic
def workflow_instance_fault(
    *, instance: WorkflowInstance, activity_id: str, message: str, actor: Actor
) -> WorkflowInstance:
    """Fault a live instance from outside the runtime (e.g. an expired bookmark), naming the activity."""
    instance = _locked_instance(instance)
    if not instance.is_live:
        raise Conflict(f"A {instance.status} workflow instance cannot be faulted.", code="illegal_transition")
    now = timezone.now()
    waiting = activity_id in instance.state.get("waiting", {})
    runtime.fault_locked(
        instance,
        activity_id=activity_id,
        message=f"activity '{activity_id}': {message}",
        now=now,
        actor=actor,
        token={"a": activity_id, "resume": {}} if waiting else None,
    )
    return instance
