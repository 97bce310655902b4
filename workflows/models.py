"""Workflow data: versioned definitions, instances with their run state, activity executions."""

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from elsa_site.errors import Conflict

MASK = "****"


class WorkflowDefinition(models.Model):
    """A workflow with a stable id; its documents live in numbered versions."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, db_index=True)
    latest_version = models.PositiveIntegerField(default=0)
    # The version new instances run; None while only drafts exist or after a retract.
    published_version = models.ForeignKey(
        "WorkflowDefinitionVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class WorkflowDefinitionVersion(models.Model):
    """One immutable document of a definition: draft, then published, superseded or retracted."""

    class Status(models.TextChoices):
        DRAFT = "Draft"
        PUBLISHED = "Published"
        SUPERSEDED = "Superseded"
        RETRACTED = "Retracted"

    definition = models.ForeignKey(WorkflowDefinition, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    document = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["definition", "-version"]
        constraints = [models.UniqueConstraint(fields=["definition", "version"], name="workflow_version_unique")]

    def __str__(self) -> str:
        return f"{self.definition_id} v{self.version} ({self.status})"


class InstanceStatus(models.TextChoices):
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    FINISHED = "Finished"
    FAULTED = "Faulted"
    CANCELLED = "Cancelled"


# The declared state machine: an instance status changes only along these edges.
TRANSITIONS: dict[str, frozenset[str]] = {
    InstanceStatus.RUNNING: frozenset(
        {InstanceStatus.SUSPENDED, InstanceStatus.FINISHED, InstanceStatus.FAULTED, InstanceStatus.CANCELLED}
    ),
    InstanceStatus.SUSPENDED: frozenset({InstanceStatus.RUNNING, InstanceStatus.FAULTED, InstanceStatus.CANCELLED}),
    InstanceStatus.FINISHED: frozenset(),
    InstanceStatus.FAULTED: frozenset(),
    InstanceStatus.CANCELLED: frozenset(),
}
LIVE_STATUSES = (InstanceStatus.RUNNING, InstanceStatus.SUSPENDED)


class WorkflowInstance(models.Model):
    """One run of a definition version, with everything needed to continue it after a crash."""

    Status = InstanceStatus

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    definition = models.ForeignKey(WorkflowDefinition, on_delete=models.CASCADE, related_name="instances")
    # Running instances keep the version they started on, whatever is published later.
    definition_version = models.ForeignKey(
        WorkflowDefinitionVersion, on_delete=models.CASCADE, related_name="instances"
    )
    status = models.CharField(max_length=16, choices=InstanceStatus.choices, default=InstanceStatus.RUNNING)
    # The execute input, with the values of secret variables replaced by "****".
    input = models.JSONField(default=dict, blank=True)
    variables = models.JSONField(default=dict, blank=True)
    # Secret variables: name -> Fernet ciphertext (workflows.encryption); decrypted only in workers.
    secret_variables = models.JSONField(default=dict, blank=True)
    outputs = models.JSONField(default=dict, blank=True)
    # Scheduling state: {"tokens": [{"a": id, "from": id, "j"?: {any-Join id: round}}], "joins": {...},
    # "waiting": {id: {...}}} (runtime.join_ready explains "j").
    state = models.JSONField(default=dict, blank=True)
    step_count = models.PositiveIntegerField(default=0)
    # Bumped by every write of the run state; a step whose snapshot is stale reloads first.
    revision = models.PositiveIntegerField(default=0)
    # Earliest durable timer (Delay, Reschedule) still pending; the timer sweep scans it.
    next_timer_at = models.DateTimeField(null=True, blank=True, db_index=True)
    fault_message = models.TextField(blank=True, default="")
    fault_activity_id = models.CharField(max_length=200, blank=True, default="")
    created_by_type = models.CharField(max_length=16, blank=True, default="")
    created_by_id = models.CharField(max_length=255, blank=True, default="")
    # NULL (not ""): the unique constraint below applies only to requests that sent a key.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One instance per (caller, Idempotency-Key): a retried execute finds the first one.
            models.UniqueConstraint(
                fields=["created_by_type", "created_by_id", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="workflow_instance_idempotency_unique",
            )
        ]
        # No index covers a column every step writes (updated_at, the run state, the counters): a
        # step then updates the row in place (a HOT update, with the room the table's fillfactor
        # leaves on each page; migration 0003) instead of adding an entry to each index.
        indexes = [models.Index(fields=["status", "created_at"], name="wf_instance_status_created_idx")]

    def __str__(self) -> str:
        return f"instance {self.id} ({self.status})"

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_STATUSES

    def check_transition(self, target: str) -> None:
        """Refuse a status change the state machine does not declare (409 through the API)."""
        if target not in TRANSITIONS[self.status]:
            raise Conflict(f"A {self.status} workflow instance cannot become {target}.", code="illegal_transition")

    def masked_variables(self) -> dict:
        """Variables for display: secret ones as "****"."""
        return {**self.variables, **dict.fromkeys(self.secret_variables, MASK)}


class ActivityExecution(models.Model):
    """One run of one activity of an instance: what ran, when, how it ended (secrets masked)."""

    class Status(models.TextChoices):
        COMPLETED = "Completed"
        SUSPENDED = "Suspended"
        RESCHEDULED = "Rescheduled"
        FAULTED = "Faulted"
        CANCELLED = "Cancelled"

    # No index of its own: wf_execution_activity_idx (instance, activity_id) serves lookups by
    # instance too, and one index less is one write less for every activity run.
    instance = models.ForeignKey(WorkflowInstance, on_delete=models.CASCADE, related_name="executions", db_index=False)
    activity_id = models.CharField(max_length=200)
    activity_type = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=Status.choices)
    attempt = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=200, blank=True, default="")
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")

    # What an execution record shows: the API, the admin and the runtime's bulk insert use this list.
    RECORD_FIELDS = (
        "activity_id",
        "activity_type",
        "status",
        "attempt",
        "started_at",
        "finished_at",
        "outcome",
        "output",
        "error",
    )

    class Meta:
        ordering = ["started_at", "id"]
        indexes = [models.Index(fields=["instance", "activity_id"], name="wf_execution_activity_idx")]

    def __str__(self) -> str:
        return f"{self.activity_id} ({self.activity_type}) {self.status}"
