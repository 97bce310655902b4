"""gunicorn's access logger, handing the log record only the atoms its format names.

gunicorn gives each access log record every atom it knows: the request line, every request and
response header and every WSGI environ entry (the socket, the input stream and the error stream
among them). The redacting filter then scrubbed all of them, calling repr() on the socket for each
request: about 1.3 ms of CPU per request, a fifth of the web process's Python time on /health/live
(measured with py-spy). The format names five or six atoms; only those are built into the record,
each already scrubbed of tokens and credentials, so the filter and the formatter see a few short
values. A header or environ atom whose name is a sensitive key in any of its forms
(`%({authorization}i)s`, `%({set-cookie}o)s`, `%({HTTP_X_API_KEY}e)s`, ...: elsa_site.logging.key_form
and sensitive_keys) is logged as "[redacted]" whatever it holds. A header atom the format names
but a request lacks is '-', as gunicorn prints it.
"""

import functools
import re

from gunicorn.glogging import Logger

from elsa_site.logging import REDACTED, key_form, scrub_text, sensitive_keys

_ATOM = re.compile(r"%\(([^)]+)\)")
# `{name}i` (request header), `{name}o` (response header), `{name}e` (environ): gunicorn's atoms with a name.
_NAMED_ATOM = re.compile(r"^\{([^}]*)\}[ioe]$")


@functools.cache
def atom_names(access_log_format: str) -> tuple[str, ...]:
    """The atoms a gunicorn access log format names, in order, once each."""
    return tuple(dict.fromkeys(_ATOM.findall(access_log_format)))


def _sensitive(name: str, keys: frozenset[str]) -> bool:
    match = _NAMED_ATOM.match(name)
    # key_form makes a header as WSGI names it (`{HTTP_X_API_KEY}e`) the header itself (`{x-api-key}i`).
    return match is not None and key_form(match.group(1)) in keys


@functools.cache
def _atom_plan(access_log_format: str, keys: frozenset[str]) -> tuple[tuple[str, bool], ...]:
    """Each atom the format names and whether it is redacted: fixed per format and key set, so
    worked out once rather than on every request."""
    return tuple((name, _sensitive(name, keys)) for name in atom_names(access_log_format))


class AccessLogger(Logger):
    def atoms(self, resp, req, environ, request_time) -> dict:
        every = super().atoms(resp, req, environ, request_time)
        named = {}
        for name, redacted in _atom_plan(self.cfg.access_log_format, sensitive_keys()):
            if redacted:
                named[name] = REDACTED
                continue
            # Looked up as gunicorn's SafeAtoms does (header and environ atoms case-insensitively,
            # '-' when absent); access() then wraps this dict in SafeAtoms, which escapes quotes.
            value = every.get(name.lower() if name.startswith("{") else name, "-")
            named[name] = scrub_text(value) if isinstance(value, str) else value
        return named
