"""Secret variables: encryption at rest, decryption in workers, and scrubbing of their plaintexts."""

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

from workflows import encryption
from workflows.models import MASK

# Shorter secrets are still encrypted and masked, but not searched for in free text: replacing
# every "a" or "42" in a log line would destroy it while protecting nothing worth a secret.
MIN_SCRUB_LENGTH = 4


def encrypt_value(value: Any) -> str:
    """Encrypt a secret variable's value (JSON-encoded so numbers and objects round-trip)."""
    return encryption.encrypt(json.dumps(value))


def decrypt_value(ciphertext: str) -> Any:
    return json.loads(encryption.decrypt(ciphertext))


def decrypt_all(secret_variables: dict[str, str]) -> dict[str, Any]:
    return {name: decrypt_value(ciphertext) for name, ciphertext in secret_variables.items()}


def escaped_forms(text: str) -> set[str]:
    """``text`` and the forms it takes inside other texts: repr() and JSON escapes, once and twice, and URL quoting.

    A secret reaches a message escaped more often than verbatim: repr() of a list or a KeyError
    doubles a backslash and escapes quotes and newlines, a JSON rendering escapes them (and, with
    ensure_ascii, every non-ASCII character), CEL's errors quote the value Rust-style (as JSON does
    for these characters), and a text quoted again (a log line in JSON) escapes the escapes.
    """
    once = {text, repr(text)[1:-1], json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1]}
    twice = {form for escaped in once for form in (repr(escaped)[1:-1], json.dumps(escaped)[1:-1])}
    return once | twice | {quote(text, safe=""), quote_plus(text, safe="")}


def plaintexts(values: Iterable[Any]) -> frozenset[str]:
    """The strings to scrub for these secret values: each string or scalar (nested too) in every escaped form."""
    found: set[str] = set()

    def add(text: str) -> None:
        if len(text) >= MIN_SCRUB_LENGTH:
            found.update(escaped_forms(text))

    def walk(value: Any, depth: int = 0) -> None:
        if depth > 20:
            return
        if isinstance(value, dict):
            for item in value.values():
                walk(item, depth + 1)
        elif isinstance(value, list):
            for item in value:
                walk(item, depth + 1)
        elif isinstance(value, bool) or value is None:
            return
        elif isinstance(value, float) and value.is_integer():
            add(str(value))
            add(str(int(value)))  # 1234.0 is printed "1234" by JSON, CEL and int()
        else:
            add(str(value))

    for value in values:
        walk(value)
    return frozenset(found)


def scrub_text(text: str, secrets: frozenset[str]) -> str:
    """``text`` with every form of every known secret replaced by "****"; scrub a whole text, never a cut of it."""
    # Longest first, so a secret containing another one (or an escaped form its plain form) is replaced whole.
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def scrub_secrets(value: Any, secrets: frozenset[str], _depth: int = 0) -> Any:
    """A copy of ``value`` with every known secret plaintext replaced by "****" (keys and values)."""
    if not secrets:
        return value
    if _depth > 50:
        return MASK
    if isinstance(value, str):
        return scrub_text(value, secrets)
    if isinstance(value, dict):
        return {scrub_text(str(k), secrets): scrub_secrets(v, secrets, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_secrets(v, secrets, _depth + 1) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        # A numeric secret converted by CEL (double("1234") is 1234.0) is still that secret.
        forms = {str(value), str(int(value))} if isinstance(value, float) and value.is_integer() else {str(value)}
        return MASK if forms & secrets else value
    return value
