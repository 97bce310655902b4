"""CEL expressions: compiled once per text, evaluated over input, vars and outputs, with bounded cost."""

import base64
import datetime as dt
import re
from functools import lru_cache
from typing import Any

import cel
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

__all__ = ["ExpressionError", "compile_expression", "evaluate_expression", "to_json_value"]

# Comprehension macros are the only way a CEL expression can do super-linear work (nested
# loops over lists); CEL has no unbounded loops or recursion, so bounding the source length and
# the number of comprehensions bounds the cost of one evaluation by the size of its data. They
# are counted in the code only: comments (which may sit between the dot and the macro's name)
# and string literals are blanked first by _code_only.
_COMPREHENSION = re.compile(r"\.\s*(?:map|filter|all|exists|exists_one)\s*\(")
_STRING_PREFIX = re.compile(r"(?<![A-Za-z0-9_])[rRbB]{1,2}$")


def _code_only(source: str) -> str:
    """``source`` with comments and the contents of string (and bytes) literals blanked, per CEL's lexical rules.

    Quotes: ' " and their triple forms; a raw prefix (r, R, with or without b) turns escapes off;
    a comment runs from // to the end of the line. Only compiled (valid) sources are scanned.
    """
    out: list[str] = []
    i, n = 0, len(source)
    while i < n:
        char = source[i]
        if char == "/" and source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end
            out.append(" ")
            continue
        if char in "'\"`":
            quote = char * 3 if char != "`" and source.startswith(char * 3, i) else char
            prefix = _STRING_PREFIX.search("".join(out[-3:]))
            raw = char == "`" or bool(prefix and "r" in prefix.group().lower())
            i += len(quote)
            while i < n and not source.startswith(quote, i):
                i += 2 if source[i] == "\\" and not raw else 1
            i += len(quote)
            out.append('""')
            continue
        out.append(char)
        i += 1
    return "".join(out)


class ExpressionError(Exception):
    """An expression failed to compile or to evaluate; ``expression`` is its source text."""

    def __init__(self, expression: str, message: str):
        super().__init__(message)
        self.expression = expression
        self.message = message


def _limits() -> tuple[int, int]:
    return settings.ELSA_EXPRESSION_MAX_LENGTH, settings.ELSA_EXPRESSION_MAX_COMPREHENSIONS


@lru_cache(maxsize=4096)
def _compile(source: str, max_length: int, max_comprehensions: int):
    if not source.strip():
        raise ExpressionError(source, "expression is empty")
    if len(source) > max_length:
        raise ExpressionError(source, f"expression is longer than {max_length} characters")
    try:
        program = cel.compile(source)
    except (ValueError, RuntimeError, TypeError) as exc:
        # The parser's message points at the position of the error; it only quotes the source.
        raise ExpressionError(source, str(exc).splitlines()[0][:300]) from None
    if len(_COMPREHENSION.findall(_code_only(source))) > max_comprehensions:
        raise ExpressionError(source, f"expression uses more than {max_comprehensions} comprehension macros")
    return program


def compile_expression(source: str):
    """Compile ``source`` (cached by text); raises ExpressionError with a readable reason."""
    if not isinstance(source, str):
        raise ExpressionError(repr(source), "expression must be a string")
    return _compile(source, *_limits())


@lru_cache(maxsize=4096)
def _references(program) -> tuple[str, ...]:
    # The top-level names the expression reads, from its syntax tree (the CEL package's own list).
    return tuple(program.variables())


def evaluate_expression(source: str, context: dict) -> Any:
    """Evaluate ``source`` over ``context`` and return a JSON-compatible value; raises ExpressionError.

    Only the names the expression reads are handed to CEL: each call converts what it is given
    into CEL values, the whole of `input`, `vars` and `outputs` otherwise, which cost more than
    the evaluation itself (measured: 62,000 instructions per evaluation of `vars.amount > 1000`
    with all three, most of them converting). A name the expression reads and the context lacks
    stays absent, and CEL reports it as before.
    """
    program = compile_expression(source)
    try:
        result = program.execute({name: context[name] for name in _references(program) if name in context})
    except SoftTimeLimitExceeded:
        raise  # the run task's time limit (workflows.tasks), not a failure of the expression
    except Exception as exc:  # noqa: BLE001 - the CEL extension raises many types; all are expression failures
        # Kept whole: the error may quote a value it failed on (a secret, say), and the engine scrubs
        # secrets from the whole text before it cuts it to length; a cut first would leave a secret's head.
        raise ExpressionError(source, f"{type(exc).__name__}: {exc}") from None
    return to_json_value(result)


def to_json_value(value: Any) -> Any:
    """CEL values as JSON: timestamps as ISO 8601, durations as seconds, bytes as base64."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    return str(value)
