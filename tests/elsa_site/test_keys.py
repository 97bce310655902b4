import base64
import secrets
import stat

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from elsa_site.keys import load_secret, optional_secret


def test_development_keys_are_generated_once_with_mode_0600(tmp_path):
    first = load_secret("ELSA_SECRET_KEY", environ_value=None, production=False, var_dir=tmp_path)
    again = load_secret("ELSA_SECRET_KEY", environ_value=None, production=False, var_dir=tmp_path)
    assert first == again and len(first) >= 50
    assert stat.S_IMODE((tmp_path / "keys.json").stat().st_mode) == 0o600


def test_environment_value_wins_and_nothing_is_written(tmp_path):
    value = "x" * 20 + "a-strong-value-from-the-environment-0123456789"
    assert load_secret("ELSA_SECRET_KEY", environ_value=value, production=False, var_dir=tmp_path) == value
    assert not (tmp_path / "keys.json").exists()


def test_production_never_generates(tmp_path):
    with pytest.raises(ImproperlyConfigured, match="ELSA_SIGNING_KEY"):
        load_secret("ELSA_SIGNING_KEY", environ_value=None, production=True, var_dir=tmp_path)
    assert not (tmp_path / "keys.json").exists()


@pytest.mark.parametrize(
    ("variable", "weak"),
    [
        ("ELSA_SIGNING_KEY", "a" * 32),
        ("ELSA_SIGNING_KEY", "0123456789" * 4),
        ("ELSA_SECRET_KEY", "abcdefghij" * 6),
        ("ELSA_ENCRYPTION_KEYS", base64.urlsafe_b64encode(bytes(32)).decode()),
        ("ELSA_ENCRYPTION_KEYS", Fernet.generate_key().decode() + "," + base64.urlsafe_b64encode(b"ab" * 16).decode()),
    ],
)
def test_long_but_guessable_secrets_are_refused_without_echoing_them(tmp_path, variable, weak):
    with pytest.raises(ImproperlyConfigured, match=variable) as refused:
        load_secret(variable, environ_value=weak, production=True, var_dir=tmp_path)
    assert weak not in str(refused.value)


@pytest.mark.parametrize(
    ("variable", "generate"),
    [
        ("ELSA_SECRET_KEY", lambda: secrets.token_urlsafe(64)),
        ("ELSA_SIGNING_KEY", lambda: secrets.token_hex(16)),
        ("ELSA_ENCRYPTION_KEYS", lambda: Fernet.generate_key().decode()),
    ],
)
def test_random_secrets_are_accepted(tmp_path, variable, generate):
    for _ in range(200):
        value = generate()
        assert load_secret(variable, environ_value=value, production=True, var_dir=tmp_path) == value


@pytest.mark.parametrize("variable", ["ELSA_AUDIT_CHECKPOINT_KEY", "ELSA_API_KEY_PEPPER"])
@pytest.mark.parametrize("weak", ["short-but-random-9f2", "x" * 40, "pepper-01" * 5])
def test_optional_secrets_are_checked_when_set(variable, weak):
    with pytest.raises(ImproperlyConfigured, match=variable) as refused:
        optional_secret(variable, environ_value=weak, derived="derived")
    assert weak not in str(refused.value)


def test_optional_secrets_fall_back_to_the_derived_value_or_keep_a_random_one():
    assert optional_secret("ELSA_API_KEY_PEPPER", environ_value="", derived="derived") == "derived"
    value = secrets.token_urlsafe(32)
    assert optional_secret("ELSA_AUDIT_CHECKPOINT_KEY", environ_value=value, derived="derived") == value
