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


HEADER_KEYS = [
    "Authorization",
    "authorization",
    "AUTHORIZATION",
    "Proxy-Authorization",
    "proxy_authorization",
    "X-API-Key",
    "x-api-key",
    "X_API_KEY",
    "x_api_key",
    "Cookie",
    "Set-Cookie",
    "set_cookie",
    "SET-COOKIE",
    "HTTP_AUTHORIZATION",
    "HTTP_PROXY_AUTHORIZATION",
    "HTTP_X_API_KEY",
    "HTTP_COOKIE",
    "Http-Cookie",
    "Api-Key",
    "Client-Secret",
    "Access-Token",
]


def project_logger(settings):
    """A logger writing through the handler, filter and formatter that settings.LOGGING configures.

    Called in the test itself: the handler binds sys.stdout when configured, and only during the
    test call is that the capture the test reads.
    """
    logging.config.dictConfig(settings.LOGGING)
    return logging.getLogger("elsa.test-header-redaction")


@pytest.mark.parametrize("key", HEADER_KEYS)
def test_header_shaped_keys_are_redacted_in_extras_args_and_nested_dicts(settings, capsys, key):
    # No Bearer/ApiKey prefix and no key=value shape: only the key can tell this value is a credential.
    credential = f"Basic {SECRET}"
    logger = project_logger(settings)
    logger.warning("extra", extra={key: credential})
    logger.warning("nested", extra={"request_headers": {key: credential, "Accept": "application/json"}})
    logger.warning("args %s", {key: credential})
    logger.warning(f"mapping %({key})s", {key: credential})
    logger.warning("pairs %s", [(key, credential), ("Accept", "application/json")])
    logger.warning("raw pairs %s", [(key.encode(), credential.encode())])
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    lines = [json.loads(line) for line in out.out.splitlines()]
    assert len(lines) == 6
    assert lines[0][key] == "[redacted]"
    assert lines[1]["request_headers"] == {key: "[redacted]", "Accept": "application/json"}
    assert lines[4]["message"] == "pairs [['" + key + "', '[redacted]'], ['Accept', 'application/json']]"


def test_configured_fields_match_in_any_header_form(settings, capsys):
    settings.ELSA_LOG_REDACTED_FIELDS = ["X-Partner-Signature"]
    project_logger(settings).warning(
        "partner", extra={"meta": {"HTTP_X_PARTNER_SIGNATURE": SECRET, "x_partner_signature": SECRET}}
    )
    out = capsys.readouterr()
    assert "partner" in out.out and SECRET not in out.out + out.err


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
