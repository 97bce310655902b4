import stat

import pytest
from django.core.exceptions import ImproperlyConfigured

from elsa_site.keys import load_secret


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
