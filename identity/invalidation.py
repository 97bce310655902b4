"""Process-local verification cache whose entries are dropped by invalidations pushed over Redis."""

import json
import logging
import os
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

logger = logging.getLogger("elsa.identity")


@dataclass
class _Entry:
    value: object
    tags: frozenset[str]
    expires: float  # time.monotonic() deadline


class VerificationCache:
    """A dict of verified credentials and principal states, each tagged with what invalidates it.

    While the Redis listener is subscribed, an invalidation published by any process reaches
    this one in milliseconds, so entries may live long (ELSA_IDENTITY_CACHE_SECONDS). While it is
    not (no Redis configured, or the connection dropped), entries live at most
    ELSA_IDENTITY_CACHE_FALLBACK_SECONDS (1 s): the "refused within one second" promise then holds
    by expiry instead of by push.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        # Bumped by every invalidation: a value read from the database before an invalidation
        # arrived may be stale, so put() refuses it (see `generation` / `put(if_generation=)`).
        self.generation = 0
        self.push_healthy = False

    def get(self, key: str):
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= time.monotonic():
            self._entries.pop(key, None)
            return None
        return entry.value

    def put(self, key: str, value, *, tags, if_generation: int) -> None:
        ttl = (
            settings.ELSA_IDENTITY_CACHE_SECONDS if self.push_healthy else settings.ELSA_IDENTITY_CACHE_FALLBACK_SECONDS
        )
        with self._lock:
            if self.generation != if_generation:
                return
            self._entries[key] = _Entry(value, frozenset(tags), time.monotonic() + ttl)

    def invalidate(self, tags) -> None:
        tags = set(tags)
        with self._lock:
            self.generation += 1
            if "*" in tags:
                self._entries.clear()
                return
            # A snapshot: get() may drop expired entries concurrently, outside the lock.
            for key in [k for k, e in list(self._entries.items()) if e.tags & tags]:
                self._entries.pop(key, None)

    def clear(self) -> None:
        self.invalidate({"*"})

    def __len__(self) -> int:
        return len(self._entries)


cache = VerificationCache()


def channel_name() -> str:
    # Redis pub/sub channels ignore the database number: the database name keeps separate
    # deployments (and parallel test runs) on one Redis apart.
    return f"elsa:identity:invalidate:{settings.DATABASES['default']['NAME']}"


def redis_url() -> str | None:
    """Where invalidations travel: ELSA_IDENTITY_REDIS_URL, else the Redis cache's URL."""
    explicit = getattr(settings, "ELSA_IDENTITY_REDIS_URL", "")
    if explicit:
        return explicit
    config = settings.CACHES.get("default", {})
    if "redis" not in config.get("BACKEND", "").lower():
        return None
    location = config.get("LOCATION")
    if isinstance(location, list | tuple):
        location = location[0] if location else None
    return location or None


class _Listener:
    """A daemon thread subscribed to the invalidation channel; one per process (fork-aware)."""

    def __init__(self) -> None:
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.subscribed = threading.Event()

    def ensure_started(self) -> None:
        # gunicorn forks workers after import: a thread started in the master does not exist in
        # the children, so each process starts its own on first use.
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            cache.push_healthy = False
            cache.clear()
            self.subscribed = threading.Event()
            self._stop = threading.Event()
            url = redis_url()
            if not url:
                return
            thread = threading.Thread(target=self._run, args=(url, self._stop), name="identity-invalidation")
            thread.daemon = True
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._pid = None

    def _run(self, url: str, stop: threading.Event) -> None:
        import redis

        while not stop.is_set():
            pubsub = None
            try:
                client = redis.Redis.from_url(url, socket_keepalive=True, health_check_interval=5)
                pubsub = client.pubsub()
                pubsub.subscribe(channel_name())
                while not stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        # Anything cached before now may have missed messages: start clean.
                        cache.clear()
                        cache.push_healthy = True
                        self.subscribed.set()
                    elif message["type"] == "message":
                        _apply(message["data"])
            except Exception:  # noqa: BLE001 - any failure: fall back to short-lived entries and reconnect
                logger.warning("identity invalidation listener disconnected; retrying")
            finally:
                cache.push_healthy = False
                cache.clear()
                self.subscribed.clear()
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001, S110 - closing a broken connection
                        pass
            stop.wait(1.0)


listener = _Listener()


def _apply(data) -> None:
    try:
        tags = json.loads(data)["tags"]
    except (ValueError, KeyError, TypeError):
        cache.clear()
        return
    cache.invalidate(tags)


def _publish_now(tags: list[str]) -> None:
    cache.invalidate(tags)
    url = redis_url()
    if not url:
        return
    import redis

    for attempt in range(3):
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
            try:
                client.publish(channel_name(), json.dumps({"tags": tags}))
            finally:
                client.close()
            return
        except Exception:  # noqa: BLE001 - retried; the change itself is committed already
            if attempt < 2:
                time.sleep(0.05 * (attempt + 1))
    # Listeners that cannot reach Redis either have fallen back to 1-second entries.
    logger.error("could not publish an identity invalidation")


def publish(*tags: str) -> None:
    """Invalidate `tags` here at once and in every process after the transaction commits."""
    tag_list = sorted(set(tags))
    # Dropped locally right away too, so a request later in this transaction re-reads.
    cache.invalidate(tag_list)
    transaction.on_commit(lambda: _publish_now(tag_list))
