"""Circuit breakers (one per executor, one per identity provider) whose state every worker shares.

The state machine is pybreaker's (closed -> open after `fail_max` consecutive failures -> half-open
after `reset_timeout` -> closed after successful probes, open again on a failed probe), but each
transition is one atomic read-modify-write of the shared state: pybreaker's CircuitRedisStorage
reads and writes state and counters in separate commands, so two workers can both move
open -> half-open and both send probes, and it cannot limit half-open to N probes. The state
lives in Redis, or in the database when the cache is not shared.
"""

import hashlib
import json
import time
from dataclasses import dataclass

import pybreaker
from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from workflows.executors.models import BreakerState, Executor

CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN
INITIAL = {"state": CLOSED, "failures": 0, "opened_at": 0.0, "probes": 0, "successes": 0, "half_open_at": 0.0}


class CircuitOpenError(pybreaker.CircuitBreakerError):
    """The executor's circuit is open (or its half-open probes are taken): the call was not made."""

    def __init__(self, executor_name: str, retry_in: float):
        self.retry_in = max(0.0, retry_in)
        super().__init__(
            f"Circuit breaker open for executor '{executor_name}': the service failed repeatedly; "
            f"calls are refused for {self.retry_in:.0f} more seconds."
        )


class IdentityProviderCircuitOpen(pybreaker.CircuitBreakerError):
    """The identity provider's circuit is open: no token request was made (its own breaker, not a partner's)."""

    def __init__(self, issuer: str, retry_in: float):
        self.retry_in = max(0.0, retry_in)
        super().__init__(
            f"Circuit breaker open for the identity provider {issuer}: its discovery or token requests failed "
            f"repeatedly; token requests are refused for {self.retry_in:.0f} more seconds."
        )


@dataclass(frozen=True)
class BreakerConfig:
    fail_max: int
    reset_timeout: float
    probes: int
    # A probe that never reports back (its worker died) frees its slot after this long.
    stale_probe_after: float

    @classmethod
    def from_settings(cls, executor: Executor | None = None, *, longest_call: float | None = None) -> "BreakerConfig":
        """The configured thresholds; `longest_call` (else the executor's longest endpoint timeout) bounds a probe."""
        endpoints = executor.endpoints if executor else []
        longest = longest_call or max((float(e.get("timeout", 30)) for e in endpoints), default=30.0)
        reset = float(settings.ELSA_BREAKER_RESET_SECONDS)
        return cls(
            fail_max=int(settings.ELSA_BREAKER_FAIL_MAX),
            reset_timeout=reset,
            probes=int(settings.ELSA_BREAKER_HALF_OPEN_PROBES),
            stale_probe_after=max(reset, longest + 5.0),
        )


@dataclass(frozen=True)
class Admission:
    allowed: bool
    probe: bool
    state: str
    retry_in: float = 0.0


# --- The state machine: pure functions of (state, now, config) ---------------------------------


def admit(state: dict, now: float, config: BreakerConfig) -> tuple[dict, Admission]:
    """May a call go out now? Returns the new state and the decision."""
    state = {**INITIAL, **state}
    if state["state"] == CLOSED:
        return state, Admission(True, False, CLOSED)
    if state["state"] == OPEN:
        opens_until = state["opened_at"] + config.reset_timeout
        if now < opens_until:
            return state, Admission(False, False, OPEN, opens_until - now)
        state.update(state=HALF_OPEN, probes=0, successes=0, half_open_at=now)
    if state["probes"] >= config.probes and now >= state["half_open_at"] + config.stale_probe_after:
        state.update(probes=0, successes=0, half_open_at=now)
    if state["probes"] < config.probes:
        state["probes"] += 1
        return state, Admission(True, True, HALF_OPEN)
    return state, Admission(False, False, HALF_OPEN, config.reset_timeout)


def record(state: dict, now: float, config: BreakerConfig, *, admission: Admission, success: bool | None) -> dict:
    """The new state after a call admitted with `admission` succeeded, failed, or (None) told nothing.

    None is for calls that ended before the service could show its health (refused by policy,
    bad TLS or credentials configuration): a probe slot is handed back, nothing else changes.
    """
    state = {**INITIAL, **state}
    current = state["state"]
    if current == HALF_OPEN and not admission.probe:
        return state  # a call admitted before the circuit opened says nothing about the recovery
    if success is None:
        if current == HALF_OPEN and state["probes"] > 0:
            state["probes"] -= 1
        return state
    if success:
        if current == CLOSED:
            state["failures"] = 0
        elif current == HALF_OPEN:
            state["successes"] += 1
            if state["successes"] >= config.probes:
                state.update(INITIAL)
        return state
    if current == CLOSED:
        state["failures"] += 1
        if state["failures"] >= config.fail_max:
            state.update(state=OPEN, opened_at=now, probes=0, successes=0)
    elif current == HALF_OPEN:
        state.update(state=OPEN, opened_at=now, probes=0, successes=0)
    return state


def displayed_state(state: dict, now: float, config: BreakerConfig) -> str:
    """The state a caller would meet now (an open circuit past its timeout is half-open)."""
    state = {**INITIAL, **state}
    if state["state"] == OPEN and now >= state["opened_at"] + config.reset_timeout:
        return HALF_OPEN
    return state["state"]


# --- Shared storage with atomic updates ----------------------------------------------------------


class RedisBreakerStore:
    """State in one Redis key, updated with WATCH/MULTI so concurrent workers never lose a transition."""

    TTL_SECONDS = 7 * 86400

    def __init__(self, key: str):
        from django_redis import get_redis_connection

        self.client = get_redis_connection("default")
        self.key = key

    def read(self) -> dict:
        raw = self.client.get(self.key)
        return json.loads(raw) if raw else dict(INITIAL)

    def update(self, change):
        result = {}

        def apply(pipe):
            raw = pipe.get(self.key)
            new_state, result["value"] = change(json.loads(raw) if raw else dict(INITIAL))
            pipe.multi()
            pipe.set(self.key, json.dumps(new_state), ex=self.TTL_SECONDS)

        # transaction() re-runs `apply` when another worker changed the key in between.
        self.client.transaction(apply, self.key)
        return result["value"]

    def reset(self) -> None:
        self.client.delete(self.key)


class DatabaseBreakerStore:
    """State in a database row, updated under SELECT ... FOR UPDATE (embedded defaults, no shared cache)."""

    def __init__(self, key: str):
        self.key = key

    def read(self) -> dict:
        row = BreakerState.objects.filter(key=self.key).first()
        return row.state if row else dict(INITIAL)

    def update(self, change):
        with transaction.atomic():
            BreakerState.objects.get_or_create(key=self.key, defaults={"state": dict(INITIAL)})
            row = BreakerState.objects.select_for_update().get(key=self.key)
            row.state, value = change(row.state)
            row.save(update_fields=["state", "updated_at"])
        return value

    def reset(self) -> None:
        BreakerState.objects.filter(key=self.key).delete()


class SharedBreaker:
    """A breaker whose state is in a shared store: admit a call, then record how it went."""

    config: BreakerConfig
    store: RedisBreakerStore | DatabaseBreakerStore

    def refused(self, admission: Admission) -> Exception:
        raise NotImplementedError

    def admit(self) -> Admission:
        """Take a slot for one call or raise the breaker's open-circuit error."""
        admission = self.store.update(lambda s: admit(s, time.time(), self.config))
        if not admission.allowed:
            raise self.refused(admission)
        return admission

    def record(self, admission: Admission, *, success: bool | None) -> str:
        """Report the outcome of an admitted call; returns the state after it."""

        def change(state):
            new_state = record(state, time.time(), self.config, admission=admission, success=success)
            return new_state, new_state["state"]

        return self.store.update(change)

    def state(self) -> str:
        return displayed_state(self.store.read(), time.time(), self.config)

    def reset(self) -> None:
        self.store.reset()


class CircuitBreaker(SharedBreaker):
    """The breaker of one executor (its partner service)."""

    def __init__(self, executor: Executor, store=None, config: BreakerConfig | None = None):
        self.executor_name = executor.name
        self.config = config or BreakerConfig.from_settings(executor)
        self.store = store or default_store(executor)

    def refused(self, admission: Admission) -> Exception:
        return CircuitOpenError(self.executor_name, admission.retry_in)


class IdentityProviderBreaker(SharedBreaker):
    """The breaker of one OIDC issuer, shared by every executor that gets its tokens there.

    Keyed by the issuer rather than the token URL: discovery (which finds the token URL) goes
    to the same provider and fails with it.
    """

    def __init__(self, issuer: str, store=None, config: BreakerConfig | None = None):
        self.issuer = issuer.rstrip("/")
        self.config = config or BreakerConfig.from_settings()
        self.store = store or shared_store(identity_provider_store_key(self.issuer))

    def refused(self, admission: Admission) -> Exception:
        return IdentityProviderCircuitOpen(self.issuer, admission.retry_in)


def store_key(executor: Executor) -> str:
    # make_key adds the cache's prefix and version, so test runs and deployments sharing a Redis stay apart.
    return cache.make_key(f"executors:breaker:{executor.id}")


def identity_provider_store_key(issuer: str) -> str:
    digest = hashlib.sha256(issuer.rstrip("/").encode()).hexdigest()[:32]
    return cache.make_key(f"executors:breaker:idp:{digest}")


def shared_store(key: str) -> RedisBreakerStore | DatabaseBreakerStore:
    """Redis when the cache is shared by every process; the database otherwise (CONTRACT.md)."""
    if settings.CACHE_IS_SHARED and "django_redis" in settings.CACHES["default"]["BACKEND"]:
        return RedisBreakerStore(key)
    return DatabaseBreakerStore(key)


def default_store(executor: Executor) -> RedisBreakerStore | DatabaseBreakerStore:
    return shared_store(store_key(executor))
