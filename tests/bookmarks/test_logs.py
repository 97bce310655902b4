"""A resume request's log output never contains its token: in-process loggers and gunicorn's access log."""

import io
import logging
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from elsa_site.logging import JsonFormatter, RedactingFilter
from tests.bookmarks.factories import approval_document, run_to_suspension, start_instance, suspended, token_for
from tests.conftest import wait_until, worker_environment
from tests.elsa_site.test_gunicorn_logs import answers, free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_resume_requests_log_nothing_of_the_token(client):
    instance, bookmark = suspended()
    issued = token_for(bookmark)
    # The production handler set-up (JSON formatter + redaction filter), at DEBUG, on the root logger.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        url = f"/elsa/api/bookmarks/resume?t={issued.token}"
        assert client.post(url, {"input": {}}, content_type="application/json").status_code == 200
        assert client.post(url, {"input": {}}, content_type="application/json").status_code == 404
        assert client.get(f"/elsa/approve?t={issued.token}").status_code == 404
        assert client.get(f"/elsa/api/bookmarks/resume?t={issued.token}x").status_code == 400
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    output = stream.getvalue()
    assert "/elsa/api/bookmarks/resume" in output, "expected the refusals to be logged"
    assert issued.token not in output


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_gunicorn_logs_of_a_real_resume_never_contain_the_token(tmp_path):
    instance = start_instance(approval_document())
    run_to_suspension(instance)
    issued = token_for(instance.bookmarks.get())
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "elsa_site/gunicorn.conf.py", "elsa_site.wsgi"],
            cwd=ROOT,
            env=worker_environment(PORT=str(port), ELSA_WEB_CONCURRENCY="1", ELSA_LOG_LEVEL="DEBUG"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    statuses = []
    try:
        wait_until(lambda: answers(port), timeout=30, message="gunicorn to listen")
        for _ in range(2):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/elsa/api/bookmarks/resume?t={issued.token}",
                data=b'{"input": {}}',
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    statuses.append(response.status)
            except urllib.error.HTTPError as error:
                statuses.append(error.code)
        wait_until(lambda: log_path.read_text().count("/elsa/api/bookmarks/resume") >= 2, message="access log lines")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert statuses == [200, 404]
    output = log_path.read_text()
    assert '"logger": "gunicorn.access"' in output
    assert issued.token not in output
