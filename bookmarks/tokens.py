"""Resume tokens: Fernet-encrypted {bookmark, instance, token id, expiry}, never stored, fingerprinted for audit."""

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from urllib.parse import quote

from django.conf import settings
from rest_framework import status

from elsa_site.errors import DomainError, InvalidInput
from workflows.encryption import InvalidToken, decrypt, encrypt

# A Fernet token for our payload is about 250 characters; anything much longer is not ours and is
# refused before any cryptography runs, so a huge `t=` cannot cost more than a length check.
MAX_TOKEN_LENGTH = 1024


class TokenMalformed(InvalidInput):
    """The token is missing, garbled, or was not issued with one of our keys."""

    code = "invalid_token"


class TokenExpired(DomainError):
    """The token authenticated but its expiry has passed."""

    http_status = status.HTTP_401_UNAUTHORIZED
    payload: "ResumeTokenPayload | None" = None  # the decoded ids, still worth auditing
    code = "token_expired"


@dataclass(frozen=True)
class ResumeTokenPayload:
    """What a resume token carries; all of it is authenticated, none of it is readable without a key."""

    bookmark_id: str
    instance_id: str
    token_id: str
    expires_at: int  # epoch seconds

    def as_json(self) -> str:
        return json.dumps(
            {"b": self.bookmark_id, "i": self.instance_id, "j": self.token_id, "e": self.expires_at},
            separators=(",", ":"),
        )


def resume_token_encode(payload: ResumeTokenPayload) -> str:
    """Encrypt and authenticate the payload with the newest key; '=' padding is dropped for clean URLs."""
    return encrypt(payload.as_json()).rstrip("=")


def resume_token_fingerprint(token: str) -> str:
    """SHA-256 of the token as presented: identifies it in audit events without being usable to resume.

    A plain hash is enough (no HMAC or slow hash): a valid token holds 128 random bits of Fernet IV and
    a random token id, so it cannot be recovered by guessing from its fingerprint.
    """
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def resume_token_decode(token: str | None, *, now: float | None = None) -> ResumeTokenPayload:
    """Authenticate and decrypt a token; TokenMalformed (400) when not ours, TokenExpired (401) when late."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise TokenMalformed("The resume token is missing or malformed.")
    padded = token + "=" * (-len(token) % 4)
    try:
        # Fernet authenticates before it decrypts (HMAC-SHA256, constant-time compare): a forged or
        # altered token fails here without revealing anything about the plaintext.
        plaintext = decrypt(padded)
    except (InvalidToken, ValueError, TypeError) as exc:
        raise TokenMalformed("The resume token is missing or malformed.") from exc
    try:
        data = json.loads(plaintext)
        payload = ResumeTokenPayload(
            bookmark_id=str(uuid.UUID(str(data["b"]))),
            instance_id=str(data["i"]),
            token_id=str(uuid.UUID(str(data["j"]))),
            expires_at=int(data["e"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        # Authentic but not a resume token (e.g. another ciphertext made with the same keys).
        raise TokenMalformed("The resume token is missing or malformed.") from exc
    if payload.expires_at <= (time.time() if now is None else now):
        expired = TokenExpired("The resume token has expired.")
        expired.payload = payload  # the ids are still worth auditing
        raise expired
    return payload


def resume_url(token: str) -> str:
    """The absolute API URL that resumes a bookmark with this token."""
    return f"{settings.ELSA_PUBLIC_URL}/elsa/api/bookmarks/resume?t={quote(token, safe='')}"


def approve_url(token: str) -> str:
    """The absolute URL of the human approval page for this token."""
    return f"{settings.ELSA_PUBLIC_URL}/elsa/approve?t={quote(token, safe='')}"
