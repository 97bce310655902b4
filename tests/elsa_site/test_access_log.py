"""The gunicorn access logger hands its record only the atoms the format names, scrubbed."""

import io
import logging
import socket
from datetime import timedelta
from types import SimpleNamespace

from gunicorn.config import Config

from elsa_site.access_log import AccessLogger, atom_names
from elsa_site.logging import JsonFormatter, RedactingFilter

TOKEN = "gAAAAABtokentokentoken"


def _logger(access_log_format: str) -> AccessLogger:
    cfg = Config()
    cfg.set("access_log_format", access_log_format)
    cfg.set("accesslog", "-")
    return AccessLogger(cfg)


def _request(sock: socket.socket):
    environ = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": f"/elsa/api/bookmarks/resume?t={TOKEN}",
        "PATH_INFO": "/elsa/api/bookmarks/resume",
        "QUERY_STRING": f"t={TOKEN}",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.1.2.3",
        "HTTP_USER_AGENT": 'agent "quoted"',
        "HTTP_COOKIE": "sessionid=abc123",
        "gunicorn.socket": sock,
    }
    req = SimpleNamespace(headers=[("AUTHORIZATION", f"ApiKey {TOKEN}"), ("USER-AGENT", 'agent "quoted"')])
    resp = SimpleNamespace(status="200 OK", sent=17, headers=[("Content-Type", "application/json")])
    return resp, req, environ, timedelta(milliseconds=12)


def test_atom_names_are_read_from_the_format_once_each():
    assert atom_names('%(h)s "%(r)s" %(s)s %(h)s %({x-request-id}i)s') == ("h", "r", "s", "{x-request-id}i")


def test_only_named_atoms_are_built_and_each_is_scrubbed():
    fmt = '%(h)s "%(r)s" %(q)s %(s)s %(B)s %(M)s %({User-Agent}i)s %({missing}i)s %(a)s'
    with socket.socket() as sock:
        atoms = _logger(fmt).atoms(*_request(sock))
    assert set(atoms) == set(atom_names(fmt))
    # No WSGI environ objects (the socket): only the format's strings and numbers.
    assert all(isinstance(value, str | int) for value in atoms.values())
    assert TOKEN not in repr(atoms)
    assert atoms["h"] == "10.1.2.3"
    assert atoms["s"] == "200" and atoms["B"] == 17 and atoms["M"] == 12
    assert atoms["r"] == "POST /elsa/api/bookmarks/resume?t=[redacted] HTTP/1.1"
    assert atoms["{User-Agent}i"] == 'agent "quoted"'
    assert atoms["{missing}i"] == "-"


def test_atoms_named_after_sensitive_headers_are_redacted_whatever_they_hold():
    fmt = "%({Authorization}i)s %({cookie}i)s %({http_cookie}e)s %({X-Api-Key}i)s %({user-agent}i)s"
    with socket.socket() as sock:
        atoms = _logger(fmt).atoms(*_request(sock))
    assert atoms == {
        "{Authorization}i": "[redacted]",
        "{cookie}i": "[redacted]",
        "{http_cookie}e": "[redacted]",
        "{X-Api-Key}i": "[redacted]",
        "{user-agent}i": 'agent "quoted"',
    }


def test_atoms_of_sensitive_keys_are_redacted_in_every_header_form():
    fmt = "%({set-cookie}o)s %({Proxy-Authorization}i)s %({HTTP_PROXY_AUTHORIZATION}e)s %({api_key}e)s %({x_api_key}i)s"
    with socket.socket() as sock:
        atoms = _logger(fmt).atoms(*_request(sock))
    assert set(atoms.values()) == {"[redacted]"}


def test_an_access_line_through_the_configured_handler(monkeypatch):
    """The logger, the redacting filter and the JSON formatter together, as gunicorn.conf.py wires them."""
    fmt = '%(h)s "%(r)s" %(s)s %(a)s'
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter())
    logger = _logger(fmt)
    logger.access_log.handlers = [handler]
    logger.access_log.setLevel(logging.INFO)
    with socket.socket() as sock:
        logger.access(*_request(sock))
    line = stream.getvalue()
    assert '"logger": "gunicorn.access"' in line
    assert "10.1.2.3" in line and "resume?t=[redacted]" in line
    # gunicorn's SafeAtoms escapes quotes once, as with its own atoms.
    assert 'agent \\\\\\"quoted\\\\\\"' in line
    assert TOKEN not in line
