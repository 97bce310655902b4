"""The hot path's plumbing: prepared statements on PostgreSQL and one Redis client per broker channel."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection, transaction

from audit.actors import Actor
from audit.services import audit_record
from elsa_site.celery import app

ROOT = Path(__file__).resolve().parents[2]


def _prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_audit_recording_runs_as_a_prepared_statement():
    # Django disables psycopg's prepared statements unless OPTIONS enables them; the settings do,
    # so the pending insert is parsed and planned once per connection, not once per event.
    assert connection.settings_dict["OPTIONS"]["prepare_threshold"] == 5
    for number in range(2):
        with transaction.atomic():
            audit_record(
                event_type="test.prepared", action="recorded", actor=Actor.system("test"), context={"n": number}
            )
    inserts = [sql for sql in _prepared_statements() if sql.startswith("INSERT INTO audit_pendingauditevent")]
    assert len(inserts) == 1


def _settings_value(expression: str, **env: str) -> str:
    """`expression` evaluated under the production settings module in a fresh process."""
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); from django.conf import settings; print({expression})"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "elsa_site.settings.base", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_prepared_statements_can_be_turned_off_for_a_transaction_pooler():
    url = "postgres://postgres@127.0.0.1:5432/elsa"
    options = 'settings.DATABASES["default"].get("OPTIONS", {}).get("prepare_threshold")'
    assert _settings_value(options, DATABASE_URL=url) == "5"
    assert _settings_value(options, DATABASE_URL=url, ELSA_DB_PREPARED_STATEMENTS="false") == "None"


def test_only_a_redis_broker_gets_the_client_reusing_transport():
    transport = "settings.CELERY_BROKER_TRANSPORT"
    assert _settings_value(transport, CELERY_BROKER_URL="redis://127.0.0.1:6379/3") == "elsa_site.broker:Transport"
    assert _settings_value(transport, CELERY_BROKER_URL="amqp://guest@127.0.0.1//") == "None"
    assert _settings_value(transport, CELERY_BROKER_URL="rediss://127.0.0.1:6380/3") == "None"


@pytest.mark.redis
def test_a_redis_channel_publishes_through_one_client_and_delivers():
    from elsa_site.broker import Transport

    queue = "elsa-test-broker-client"
    with app.connection_for_write() as conn:
        assert isinstance(conn.transport, Transport)
        channel = conn.default_channel
        try:
            with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
                assert first is second
            producer = conn.Producer(channel)
            for number in range(3):
                producer.publish({"n": number}, routing_key=queue, declare=[conn.SimpleQueue(queue).queue])
            received = conn.SimpleQueue(queue)
            got = [received.get(timeout=5) for _ in range(3)]
            assert [message.payload["n"] for message in got] == [0, 1, 2]
            for message in got:
                message.ack()
            received.close()
        finally:
            channel.queue_delete(queue)


@pytest.mark.redis
def test_a_channel_builds_a_new_client_when_its_pool_is_replaced():
    # After a fork kombu drops the channel's pools; the cached client must follow the new pool.
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        with channel.conn_or_acquire() as before:
            pass
        channel._disconnect_pools()
        with channel.conn_or_acquire() as after:
            assert after is not before
            assert after.connection_pool is channel.pool
            assert after.ping()


@pytest.mark.redis
def test_a_publish_and_a_resume_rate_check_read_only_settings_that_are_set(settings, monkeypatch):
    """Celery and django-ratelimit read some settings on every call; each unset one is a failed
    attribute lookup with an exception, four per Celery key (its prefixed and old names). The
    settings set them to their defaults, so these reads all find their value."""
    from django.conf import LazySettings
    from django.test import RequestFactory

    from bookmarks.ratelimits import resume_rate_check
    from workflows import runtime

    settings.ELSA_WORKFLOW_QUEUE = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-hot-path"  # consumed by no worker
    request = RequestFactory().post("/elsa/api/bookmarks/resume", REMOTE_ADDR="127.0.0.1")
    runtime.send(runtime.RUN_TASK, ["warm-up"])  # first use: connections, declarations
    missing = []
    lookup = LazySettings.__getattr__

    def recording(self, name):
        try:
            return lookup(self, name)
        except AttributeError:
            missing.append(name)
            raise

    monkeypatch.setattr(LazySettings, "__getattr__", recording)
    try:
        runtime.send(runtime.RUN_TASK, ["publish"])
        resume_rate_check(request)
    finally:
        monkeypatch.undo()
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge(settings.ELSA_WORKFLOW_QUEUE)
    assert missing == []


def test_the_resume_route_is_resolved_first_and_every_api_route_still_resolves_to_itself():
    """The bookmarks routes come before the other API includes (each include tried first costs the
    resume a caught Resolver404); no route of another app matches a bookmarks path, so every
    named API route still resolves to itself."""
    import uuid

    from django.urls import URLResolver, get_resolver, resolve, reverse

    api = ("bookmarks.urls", "audit.urls", "workflows.urls", "workflows.executors.urls", "identity.urls")
    includes = [entry for entry in get_resolver().url_patterns if isinstance(entry, URLResolver)]
    modules = [getattr(entry.urlconf_name, "__name__", entry.urlconf_name) for entry in includes]
    assert modules.index("bookmarks.urls") < min(modules.index(name) for name in api[1:])
    samples = {"bookmark_id": uuid.uuid4(), "instance_id": uuid.uuid4(), "definition_id": uuid.uuid4()}
    samples |= {"executor_id": uuid.uuid4(), "event_id": 7, "pk": 7}
    for entry in (entry for entry, module in zip(includes, modules, strict=True) if module in api):
        for pattern in entry.url_patterns:
            name = getattr(pattern, "name", None)
            if not name:
                continue
            kwargs = {key: samples[key] for key in pattern.pattern.converters}
            assert resolve(reverse(name, kwargs=kwargs)).url_name == name
