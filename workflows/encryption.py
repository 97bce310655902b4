"""Encryption at rest with ELSA_ENCRYPTION_KEYS: the newest key encrypts, every listed key decrypts."""

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

__all__ = ["InvalidToken", "decrypt", "encrypt", "keyring"]


@lru_cache(maxsize=4)
def _keyring(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in keys])


def keyring() -> MultiFernet:
    """The MultiFernet for the configured keys (read on use, so tests can override the setting)."""
    return _keyring(tuple(settings.ELSA_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    return keyring().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str, *, ttl: int | None = None) -> str:
    """Decrypt with any listed key; raises InvalidToken when forged, foreign or older than ttl."""
    return keyring().decrypt(ciphertext.encode(), ttl=ttl).decode()
