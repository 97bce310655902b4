"""Secret variables: encryption at rest, decryption in workers, and scrubbing of their plaintexts."""

from collections.abc import Iterable
from typing import Any

from workflows import encryption
from workflows.models import MASK

# Shorter secrets are still encrypted and masked, but not searched for in free text: replacing
# every "a" or "42" in a log line would destroy it while protecting nothing worth a secret.
MIN_SCRUB_LENGTH = 4


def encrypt_value(value: Any) -> str:
    """Encrypt a secret variable's value (JSON-encoded so numbers and objects round-trip)."""
    import json

    return encryption.encrypt(json.dumps(value))


def decrypt_value(ciphertext: str) -> Any:
    import json

    return json.loads(encryption.decrypt(ciphertext))


def decrypt_all(secret_variables: dict[str, str]) -> dict[str, Any]:
    return {name: decrypt_value(ciphertext) for name, ciphertext in secret_variables.items()}


def plaintexts(values: Iterable[Any]) -> frozenset[str]:
    """The strings to scrub for these secret values (strings, and the text of scalars and nested strings)."""
    found: set[str] = set()

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
        else:
            text = str(value)
            if len(text) >= MIN_SCRUB_LENGTH:
                found.add(text)

    for value in values:
        walk(value)
    return frozenset(found)


def scrub_text(text: str, secrets: frozenset[str]) -> str:
    # Longest first, so a secret containing another one is replaced whole.
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
    if isinstance(value, int | float) and not isinstance(value, bool) and str(value) in secrets:
        return MASK
    return value
