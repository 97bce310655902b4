"""Shared fixtures: service detection, a live Celery worker subprocess, API clients."""

import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICES_REQUIRED = os.environ.get("ELSA_TEST_SERVICES", "") == "required"


def pytest_configure(config):
    from elsa_site.settings import test as test_settings

    if SERVICES_REQUIRED:
        missing = [
            name
            for name, (host, port) in {
                "PostgreSQL": (test_settings.PG_HOST, test_settings.PG_PORT),
                "Redis": (test_settings.REDIS_HOST, test_settings.REDIS_PORT),
            }.items()
            if not test_settings.service_answers(host, port)
        ]
        if missing:
            pytest.exit(
                f"ELSA_TEST_SERVICES=required but {', '.join(missing)} is not reachable on 127.0.0.1", returncode=3
            )


def pytest_collection_modifyitems(config, items):
    from django.conf import settings

    postgres = getattr(settings, "POSTGRES_AVAILABLE", False)
    redis = getattr(settings, "REDIS_AVAILABLE", False)
    for item in items:
        if "postgres" in item.keywords and not postgres:
            item.add_marker(pytest.mark.skip(reason="PostgreSQL is not reachable on 127.0.0.1:5432"))
        if ("redis" in item.keywords or "live_worker" in item.keywords) and not redis:
            item.add_marker(pytest.mark.skip(reason="Redis is not reachable on 127.0.0.1:6379"))


class WorkerProcess:
    """A real `celery worker` subprocess on the test database and the test broker."""

    def __init__(self, proc: subprocess.Popen, log_path: Path):
        self.proc = proc
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def child_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crashed host would."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def worker_environment(**extra: str) -> dict[str, str]:
    from django.conf import settings

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "elsa_site.settings.test",
        "ELSA_TEST_DB": settings.TEST_DB_NAME,
        "ELSA_TEST_REDIS_DB": str(settings.TEST_REDIS_DB),
        "ELSA_CELERY_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


def wait_for_worker(worker: WorkerProcess, timeout: float = 60) -> None:
    from elsa_site.celery import ping

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            raise RuntimeError(f"celery worker exited early:\n{worker.log()[-4000:]}")
        try:
            if ping.apply_async().get(timeout=5) == "pong":
                return
        except Exception:  # noqa: BLE001, S112 - not ready yet; poll again until the deadline
            continue
    raise RuntimeError(f"celery worker not ready after {timeout}s:\n{worker.log()[-4000:]}")


@contextmanager
def run_celery_worker(tmp_dir: Path, *, concurrency: int = 2, extra_env: dict[str, str] | None = None):
    """Start a worker, wait until it answers a ping, and stop it (with its children) afterwards."""
    name = f"test-{uuid.uuid4().hex[:8]}@%h"
    log_path = tmp_dir / f"worker-{uuid.uuid4().hex[:8]}.log"
    log_file = open(log_path, "w")  # noqa: SIM115 - closed in finally below
    from django.conf import settings

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "elsa_site",
            "worker",
            "--loglevel",
            "INFO",
            "--pool",
            "prefork",
            "--concurrency",
            str(concurrency),
            "--queues",
            settings.CELERY_TASK_DEFAULT_QUEUE,
            "--hostname",
            name,
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=worker_environment(**(extra_env or {})),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker = WorkerProcess(proc, log_path)
    try:
        wait_for_worker(worker)
        yield worker
    finally:
        worker.stop()
        log_file.close()


@pytest.fixture(scope="session", autouse=True)
def _fresh_cache_database():
    """Start every run with an empty test cache: nothing cached by an earlier run can answer."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(scope="session", autouse=True)
def _audit_chainer_stopped_before_teardown(django_db_setup):
    """The audit chainer thread of this process closes its connection before the test database is
    dropped (transactional tests wake it; it holds a connection while it works)."""
    yield
    from audit.chainer import chainer

    chainer.stop()


@pytest.fixture(autouse=True)
def _audit_chained_before_flush(request):
    """A transactional test ends with a flush (TRUNCATE of every table). A chainer pass running then
    (this process's thread or a live worker's, up to 50 ms after their last commit) locks audit
    tables in its own order and can deadlock with it: chain what is pending first, which also
    waits for any pass in flight; a later pass finds nothing and holds no lock the flush waits on."""
    marker = request.node.get_closest_marker("django_db")
    transactional = bool(marker and (marker.kwargs.get("transaction") or marker.kwargs.get("reset_sequences")))
    # fixturenames is the whole closure: live_worker brings transactional_db in.
    transactional = transactional or any(name in request.fixturenames for name in ("transactional_db", "live_server"))
    if not transactional:
        yield
        return
    request.getfixturevalue("_django_db_helper")  # set up first, so this teardown runs before its flush
    yield
    from django.db import DatabaseError

    from audit.services import audit_seal

    with suppress(DatabaseError):  # a test that broke the connection: the flush reports it
        audit_seal()


@pytest.fixture(scope="session")
def celery_worker_factory(django_db_setup, django_db_blocker, tmp_path_factory):
    """Start extra workers inside a test: `with celery_worker_factory() as worker: ...`."""
    tmp_dir = tmp_path_factory.mktemp("workers")

    def factory(**kwargs):
        return run_celery_worker(tmp_dir, **kwargs)

    return factory


@pytest.fixture(scope="session")
def _session_worker(django_db_setup, django_db_blocker, tmp_path_factory):
    # Depends on django_db_setup so the worker stops before the test database is dropped.
    _purge_test_queue()
    with run_celery_worker(tmp_path_factory.mktemp("live-worker")) as worker:
        yield worker


@pytest.fixture
def live_worker(_session_worker, transactional_db):
    """A running Celery worker sharing the (committed) test database; use with transactional tests."""
    if _session_worker.proc.poll() is not None:
        pytest.fail(f"live worker died:\n{_session_worker.log()[-4000:]}")
    return _session_worker


def _purge_test_queue() -> None:
    from elsa_site.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(app.conf.task_default_queue)


def wait_until(predicate, *, timeout: float = 30, interval: float = 0.05, message: str = "condition"):
    """Poll `predicate` until it returns a truthy value or the deadline passes (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()
