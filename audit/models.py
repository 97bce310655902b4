"""Audit data: the append-only, hash-chained event log and its signed checkpoints."""

import uuid

from django.db import models


class AppendOnlyError(Exception):
    """Raised when code tries to change or remove an audit row; the log only grows."""


class AppendOnlyQuerySet(models.QuerySet):
    """A queryset that refuses bulk UPDATE and DELETE: evidence is never rewritten through the ORM."""

    def update(self, **kwargs):
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only and cannot be updated.")

    def delete(self):
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only and cannot be deleted.")

    def bulk_update(self, objs, fields, batch_size=None):
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only and cannot be updated.")

    def update_or_create(self, *args, **kwargs):
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only and cannot be updated.")

    def bulk_create(self, *args, **kwargs):
        # Rows are only created one by one by the chain service, which computes each hash under a lock.
        raise AppendOnlyError(f"{self.model.__name__} rows are written by audit.services only.")


class AppendOnlyModel(models.Model):
    """A model whose rows can be inserted once and never updated or deleted through the ORM."""

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        # An existing row is evidence: refuse any second save, even of unchanged values.
        if not self._state.adding:
            raise AppendOnlyError(f"{type(self).__name__} rows are append-only and cannot be updated.")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError(f"{type(self).__name__} rows are append-only and cannot be deleted.")


class AuditEvent(AppendOnlyModel):
    """One audited action; `hash` chains it to the previous event (see audit.chain)."""

    class Result(models.TextChoices):
        SUCCESS = "success"
        FAILURE = "failure"

    class ActorType(models.TextChoices):
        USER = "user"
        APPLICATION = "application"
        SYSTEM = "system"
        ANONYMOUS = "anonymous"

    # Not an auto-increment: the service assigns head.id + 1 under the chain lock, so ids are the
    # contiguous chain positions and a deleted row leaves a detectable gap. The primary key's
    # uniqueness also makes a fork (two events after the same head) impossible to commit.
    id = models.BigIntegerField(primary_key=True)
    event_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    timestamp = models.DateTimeField()
    event_type = models.CharField(max_length=100)
    action = models.CharField(max_length=100)
    result = models.CharField(max_length=16, choices=Result.choices)
    resource_type = models.CharField(max_length=64, blank=True, default="")
    resource_id = models.CharField(max_length=255, blank=True, default="")
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.CharField(max_length=255, blank=True, default="")
    actor_name = models.CharField(max_length=255, blank=True, default="")
    # A normalized text address rather than inet: the hash covers exactly the string stored here.
    actor_ip = models.CharField(max_length=45, blank=True, default="")
    context = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    previous_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["id"]
        # One index per search filter (plain btree, without the extra LIKE indexes of db_index=True,
        # because every index costs each append). Filters combine with id for cursor pagination.
        indexes = [
            models.Index(fields=["timestamp"], name="audit_event_timestamp_idx"),
            models.Index(fields=["event_type"], name="audit_event_type_idx"),
            models.Index(fields=["action"], name="audit_event_action_idx"),
            models.Index(fields=["result"], name="audit_event_result_idx"),
            models.Index(fields=["resource_type", "resource_id"], name="audit_event_resource_idx"),
            # resource_id is also a filter on its own, and a b-tree serves only its leading column.
            models.Index(fields=["resource_id"], name="audit_event_resource_id_idx"),
            models.Index(fields=["actor_id"], name="audit_event_actor_idx"),
        ]
        # Two events can never follow the same predecessor: a fork cannot be committed.
        constraints = [models.UniqueConstraint(fields=["previous_hash"], name="audit_event_single_successor")]
        # No add/change/delete permissions: the admin is read-only and nobody can be granted more.
        default_permissions = ("view",)

    def __str__(self) -> str:
        return f"#{self.id} {self.event_type} {self.action} ({self.result})"


class PendingAuditEvent(AppendOnlyModel):
    """An event recorded inside its action's transaction and not chained yet.

    audit_record() inserts here, with no lock, so business transactions never wait on the chain;
    right after the transaction commits, the same process moves every pending event into the
    chain (audit.services.audit_seal), and a periodic sweep catches any left behind (a process
    killed between the two). Rows are only ever inserted, then deleted by the sealer as they
    are chained; the ORM refuses updates and PostgreSQL triggers refuse UPDATE and TRUNCATE.
    """

    id = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(default=uuid.uuid4, editable=False)
    timestamp = models.DateTimeField()
    event_type = models.CharField(max_length=100)
    action = models.CharField(max_length=100)
    result = models.CharField(max_length=16, choices=AuditEvent.Result.choices)
    resource_type = models.CharField(max_length=64, blank=True, default="")
    resource_id = models.CharField(max_length=255, blank=True, default="")
    actor_type = models.CharField(max_length=16, choices=AuditEvent.ActorType.choices)
    actor_id = models.CharField(max_length=255, blank=True, default="")
    actor_name = models.CharField(max_length=255, blank=True, default="")
    actor_ip = models.CharField(max_length=45, blank=True, default="")
    context = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # The canonical serialization (audit.chain.canonical_parts) around the two values the chainer
    # fills in, the id and the previous hash: chaining is then concatenation and SHA-256, done by
    # PostgreSQL in one statement (function audit_chain_pending, migration 0002).
    canonical_head = models.TextField()
    canonical_middle = models.TextField()
    canonical_tail = models.TextField()

    class Meta:
        ordering = ["id"]
        default_permissions = ("view",)

    def __str__(self) -> str:
        return f"pending {self.event_type} {self.action} ({self.result})"


class AuditCheckpoint(AppendOnlyModel):
    """A signed record of the chain head at one moment; the key signing it is not in the database."""

    event_id = models.BigIntegerField(db_index=True)
    event_hash = models.CharField(max_length=64)
    created = models.DateTimeField()
    # HMAC-SHA256 over (event id, event hash, created) under settings.ELSA_AUDIT_CHECKPOINT_KEY.
    signature = models.CharField(max_length=64)

    class Meta:
        ordering = ["id"]
        default_permissions = ("view",)
        # Freshness reads the newest checkpoint by time; the beat adds one per interval, for years.
        indexes = [models.Index(fields=["created", "id"], name="audit_checkpoint_created_idx")]

    def __str__(self) -> str:
        return f"checkpoint at event #{self.event_id}"
