"""Two real gunicorn processes: a disable, rotation or user disable made in one is refused in the other within 1 s."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, tmp_dir: Path, name: str):
        from django.conf import settings

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_dir / f"{name}.log"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": settings.SETTINGS_MODULE,
            "ELSA_TEST_DB": settings.TEST_DB_NAME,
            "ELSA_TEST_REDIS_DB": str(settings.TEST_REDIS_DB),
            "ELSA_BIND": f"127.0.0.1:{self.port}",
            "ELSA_WEB_CONCURRENCY": "1",
            # Without a push, a cached entry would live a minute: only the push can meet 1 s.
            "ELSA_IDENTITY_CACHE_FALLBACK_SECONDS": "60",
            "ELSA_IDENTITY_CACHE_SECONDS": "300",
        }
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "elsa_site/gunicorn.conf.py", "elsa_site.wsgi"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def get(self, path: str, headers: dict | None = None) -> int:
        request = urllib.request.Request(self.base + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def post(self, path: str, body: bytes, headers: dict) -> int:
        request = urllib.request.Request(
            self.base + path, data=body, headers={"Content-Type": "application/json", **headers}, method=method_of(body)
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(self.log_path.read_text())
        try:
            return self.get("/health/live") == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


def method_of(body: bytes) -> str:
    return "PATCH" if body.startswith(b'{"is_active"') else "POST"


@pytest.fixture(scope="module")
def servers(django_db_setup, django_db_blocker, tmp_path_factory):
    tmp_dir = tmp_path_factory.mktemp("servers")
    pair = [Server(tmp_dir, "a"), Server(tmp_dir, "b")]
    try:
        for server in pair:
            wait_until(server.ready, timeout=60, message="gunicorn to answer /health/live")
        yield pair
    finally:
        for server in pair:
            server.stop()


def subscribers() -> int:

    from identity import invalidation

    client = redis.Redis.from_url(invalidation.redis_url())
    try:
        return dict(client.pubsub_numsub(invalidation.channel_name()))[invalidation.channel_name().encode()]
    finally:
        client.close()


def warm(servers, headers: dict) -> None:
    """Each server has verified (and cached) the credential, and its listener is subscribed."""
    for server in servers:
        assert server.get("/elsa/api/identity/me", headers) == 200
    # The test process listens too; both servers start their listener on first use.
    wait_until(lambda: subscribers() >= 3, timeout=10, message="both servers subscribed")
    for server in servers:
        assert server.get("/elsa/api/identity/me", headers) == 200


def refused_within_one_second(server, headers: dict) -> float:
    started = time.monotonic()
    wait_until(
        lambda: server.get("/elsa/api/identity/me", headers) == 401,
        timeout=1.0,
        interval=0.02,
        message="the other process to refuse the credential",
    )
    return time.monotonic() - started


def test_disabled_application_is_refused_in_another_process_within_one_second(servers, transactional_db):
    from tests.identity.factories import application_with_key

    a, b = servers
    application, key = application_with_key("read:role")
    _, admin_key = application_with_key("update:application")
    target = {"X-API-Key": key}
    warm(servers, target)
    status = a.post(f"/elsa/api/identity/applications/{application.pk}/disable", b"{}", {"X-API-Key": admin_key})
    assert status == 200
    assert a.get("/elsa/api/identity/me", target) == 401  # the next request in the same process
    assert refused_within_one_second(b, target) < 1.0


def test_rotated_key_is_refused_in_another_process_within_one_second(servers, transactional_db):
    from tests.identity.factories import application_with_key

    a, b = servers
    application, key = application_with_key("read:role")
    _, admin_key = application_with_key("update:application", "read:role")
    target = {"Authorization": f"ApiKey {key}"}
    warm(servers, target)
    status = a.post(f"/elsa/api/identity/applications/{application.pk}/rotate", b"{}", {"X-API-Key": admin_key})
    assert status == 200
    assert a.get("/elsa/api/identity/me", target) == 401
    assert refused_within_one_second(b, target) < 1.0


def test_disabled_user_jwt_is_refused_in_another_process_within_one_second(servers, transactional_db):
    import json

    from tests.identity.factories import PASSWORD, UserFactory, application_with_key

    a, b = servers
    user = UserFactory()
    _, admin_key = application_with_key("update:user")
    request = urllib.request.Request(
        a.base + "/elsa/api/identity/login",
        data=json.dumps({"username": user.username, "password": PASSWORD}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        token = json.loads(response.read())["access_token"]
    target = {"Authorization": f"Bearer {token}"}
    warm(servers, target)
    status = a.post(f"/elsa/api/identity/users/{user.pk}", b'{"is_active": false}', {"X-API-Key": admin_key})
    assert status == 200
    assert a.get("/elsa/api/identity/me", target) == 401
    assert refused_within_one_second(b, target) < 1.0
