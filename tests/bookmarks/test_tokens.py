"""Resume tokens: authenticated encryption, unreadable payload, key rotation, expiry, fingerprints."""

import base64
import json
import time
import uuid

import pytest
from cryptography.fernet import Fernet

from bookmarks.tokens import (
    ResumeTokenPayload,
    TokenExpired,
    TokenMalformed,
    approve_url,
    resume_token_decode,
    resume_token_encode,
    resume_token_fingerprint,
    resume_url,
)


def payload(expires_in: int = 600) -> ResumeTokenPayload:
    return ResumeTokenPayload(str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4()), int(time.time()) + expires_in)


def test_token_round_trips_its_payload():
    original = payload()
    assert resume_token_decode(resume_token_encode(original)) == original


def test_token_reveals_nothing_of_its_payload():
    original = payload()
    token = resume_token_encode(original)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for value in (original.bookmark_id, original.instance_id, original.token_id, str(original.expires_at)):
        assert value not in token
        assert value.encode() not in raw


def test_two_tokens_for_the_same_payload_differ():
    original = payload()
    assert resume_token_encode(original) != resume_token_encode(original)


def test_every_flipped_character_is_refused():
    token = resume_token_encode(payload())
    for index in range(0, len(token), 7):
        flipped = token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1 :]
        with pytest.raises(TokenMalformed):
            resume_token_decode(flipped)


def test_rotated_key_still_opens_old_tokens_while_listed(settings):
    old_key, new_key = settings.ELSA_ENCRYPTION_KEYS[0], Fernet.generate_key().decode()
    old_token = resume_token_encode(payload())
    settings.ELSA_ENCRYPTION_KEYS = [new_key, old_key]
    assert resume_token_decode(old_token).token_id
    new_token = resume_token_encode(payload())
    # The newest key encrypts: a new token opens with the new key alone.
    settings.ELSA_ENCRYPTION_KEYS = [new_key]
    assert resume_token_decode(new_token).token_id
    with pytest.raises(TokenMalformed):
        resume_token_decode(old_token)


def test_token_of_a_foreign_key_is_malformed():
    foreign = Fernet(Fernet.generate_key()).encrypt(payload().as_json().encode()).decode()
    with pytest.raises(TokenMalformed):
        resume_token_decode(foreign)


def test_expired_token_raises_expired_with_its_payload():
    original = payload(expires_in=-1)
    with pytest.raises(TokenExpired) as caught:
        resume_token_decode(resume_token_encode(original))
    assert caught.value.payload == original
    assert caught.value.http_status == 401


@pytest.mark.parametrize("value", [None, "", "x" * 2000, "!!!", json.dumps({"b": 1})])
def test_missing_or_absurd_tokens_are_malformed(value):
    with pytest.raises(TokenMalformed):
        resume_token_decode(value)


def test_fingerprint_is_sha256_and_does_not_contain_the_token():
    token = resume_token_encode(payload())
    fingerprint = resume_token_fingerprint(token)
    assert len(fingerprint) == 64 and fingerprint == resume_token_fingerprint(token)
    assert token not in fingerprint


def test_urls_are_absolute_from_the_public_url(settings):
    settings.ELSA_PUBLIC_URL = "https://flows.example.com"
    token = resume_token_encode(payload())
    assert resume_url(token) == f"https://flows.example.com/elsa/api/bookmarks/resume?t={token}"
    assert approve_url(token) == f"https://flows.example.com/elsa/approve?t={token}"
