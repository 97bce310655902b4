import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import wait_until, worker_environment

ROOT = Path(__file__).resolve().parents[2]
SECRET = "tok-Zx81-very-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.mark.django_db(transaction=True)
def test_gunicorn_access_log_is_json_and_never_contains_tokens(tmp_path):
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "elsa_site/gunicorn.conf.py", "elsa_site.wsgi"],
            cwd=ROOT,
            env=worker_environment(PORT=str(port), ELSA_WEB_CONCURRENCY="1"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: answers(port), timeout=30, message="gunicorn to listen")
        for path in (f"/health/live?t={SECRET}", f"/elsa/api/bookmarks/resume?t={SECRET}&in=%7B%7D"):
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": SECRET})
            try:
                urllib.request.urlopen(request, timeout=10).read()
            except urllib.error.HTTPError:
                pass
        wait_until(lambda: "/elsa/api/bookmarks/resume" in log_path.read_text(), message="the access log line")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    output = log_path.read_text()
    assert '"logger": "gunicorn.access"' in output
    assert "/health/live" in output
    assert SECRET not in output
