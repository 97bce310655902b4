import io
import json
import logging
import logging.config
import os

import pytest

from elsa_site.logging import JsonFormatter, RedactingFilter

SECRET = "s3cr3t-Value-4242"


@pytest.fixture
def log_output():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("elsa.test-redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_log_lines_are_json_objects(log_output):
    logger, stream = log_output
    logger.info("hello %s", "world", extra={"instance_id": "abc"})
    (line,) = lines(stream)
    assert line["message"] == "hello world"
    assert line["instance_id"] == "abc"
    assert line["level"] == "INFO"


def test_sensitive_keys_are_redacted_at_any_depth(log_output):
    logger, stream = log_output
    logger.info(
        "call",
        extra={
            "request_meta": {"headers": {"Authorization": f"Bearer {SECRET}"}, "nested": [{"password": SECRET}]},
            "variables": {"partner_token": SECRET},
            "api_key": SECRET,
        },
    )
    logger.info("args %s", {"deep": {"client_secret": SECRET}})
    assert SECRET not in stream.getvalue()
    first = lines(stream)[0]
    assert first["api_key"] == "[redacted]"
    assert first["request_meta"]["nested"][0]["password"] == "[redacted]"


def test_configured_extra_fields_are_redacted(log_output, settings):
    settings.ELSA_LOG_REDACTED_FIELDS = ["iban"]
    logger, stream = log_output
    logger.info("payment", extra={"payment": {"IBAN": SECRET}})
    assert SECRET not in stream.getvalue()


def test_resume_tokens_and_inline_credentials_are_stripped_from_messages(log_output):
    logger, stream = log_output
    logger.warning("GET /elsa/api/bookmarks/resume?t=%s&in=1", SECRET)
    logger.warning("failed with password=%s", SECRET)
    try:
        raise ValueError(f"token: {SECRET}")
    except ValueError:
        logger.exception("boom")
    assert SECRET not in stream.getvalue()


@pytest.mark.django_db
def test_a_secret_sent_in_a_request_never_reaches_the_log(client, capsys, settings):
    # Configure logging now so the project's stdout handler writes into this test's capture.
    logging.config.dictConfig(settings.LOGGING)
    client.get(f"/elsa/api/bookmarks/resume?t={SECRET}", HTTP_AUTHORIZATION=f"Bearer {SECRET}")
    client.get(f"/no-such-page?t={SECRET}&password={SECRET}", HTTP_X_API_KEY=SECRET)
    out = capsys.readouterr()
    assert "Not Found" in out.out  # the request was logged...
    assert SECRET not in out.out + out.err  # ...without the secret


def test_request_id_is_echoed_and_generated(client):
    assert client.get("/health/live", HTTP_X_REQUEST_ID="abc-123")["X-Request-ID"] == "abc-123"
    generated = client.get("/health/live", HTTP_X_REQUEST_ID="bad id with spaces")["X-Request-ID"]
    assert generated != "bad id with spaces" and len(generated) == 32


@pytest.mark.parametrize(("level", "expected"), [("WARNING", 30), ("INFO", 20)])
def test_celery_logs_follow_elsa_log_level(level, expected):
    # The settings module configures logging at start-up; a fresh interpreter sees it as a worker would.
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = "import django, logging; django.setup(); print(logging.getLogger('celery.app.trace').getEffectiveLevel())"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "elsa_site.settings", "ELSA_LOG_LEVEL": level}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == str(expected)
