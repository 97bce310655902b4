import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.checks import run_checks

ROOT = Path(__file__).resolve().parents[2]

SECURE_PRODUCTION = {
    "ELSA_ENV": "production",
    "DEBUG": False,
    "ELSA_PUBLIC_URL": "https://workflows.example.com",
    "CORS_ALLOWED_ORIGINS": ["https://app.example.com"],
    "SECURE_SSL_REDIRECT": True,
    "SECURE_HSTS_SECONDS": 31536000,
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
    "SESSION_COOKIE_SECURE": True,
    "CSRF_COOKIE_SECURE": True,
    "ALLOWED_HOSTS": ["workflows.example.com"],
    "CACHE_IS_SHARED": True,
}


def project_error_ids() -> set[str]:
    return {m.id for m in run_checks(include_deployment_checks=True) if m.id and m.id.startswith("elsa_site.")}


def test_secure_production_settings_raise_no_project_errors(settings):
    for name, value in SECURE_PRODUCTION.items():
        setattr(settings, name, value)
    assert project_error_ids() == set()


@pytest.mark.parametrize(
    ("check_id", "override"),
    [
        ("elsa_site.E001", {"DEBUG": True}),
        ("elsa_site.E002", {"ELSA_PUBLIC_URL": "http://workflows.example.com"}),
        ("elsa_site.E003", {"CORS_ALLOWED_ORIGINS": ["*"]}),
        ("elsa_site.E004", {"CACHE_IS_SHARED": False}),
        ("elsa_site.E005", {"SECURE_SSL_REDIRECT": False}),
        ("elsa_site.E006", {"SECURE_HSTS_SECONDS": 3600}),
        ("elsa_site.E007", {"SESSION_COOKIE_SECURE": False}),
        ("elsa_site.E008", {"ALLOWED_HOSTS": ["*"]}),
        ("elsa_site.E009", {"ELSA_SIGNING_KEY": "same-as-secret"}),
    ],
)
def test_each_insecure_production_setting_fires_its_check(settings, check_id, override):
    for name, value in SECURE_PRODUCTION.items():
        setattr(settings, name, value)
    if check_id == "elsa_site.E009":
        settings.SECRET_KEY = "same-as-secret"
    for name, value in override.items():
        setattr(settings, name, value)
    assert check_id in project_error_ids()


def test_non_shared_cache_with_several_web_processes_fires_in_development(settings):
    settings.ELSA_WEB_CONCURRENCY = 4
    settings.CACHE_IS_SHARED = False
    assert "elsa_site.E004" in project_error_ids()


def production_env(tmp_path, **overrides) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ELSA_", "DJANGO_", "CACHE_URL", "DATABASE_URL"))}
    env.update(
        {
            "ELSA_ENV": "production",
            "DJANGO_SETTINGS_MODULE": "elsa_site.settings",
            "ELSA_SECRET_KEY": "k" * 10 + "Zq8#vP2!mW9@xL4$rT7%yB1^nC6&dF3*gH5(jK0)" + "s" * 10,
            "ELSA_SIGNING_KEY": "signing-key-that-is-long-enough-0123456789",
            "ELSA_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "ELSA_PUBLIC_URL": "https://workflows.example.com",
            "ELSA_ALLOWED_HOSTS": "workflows.example.com",
            "CACHE_URL": "redis://127.0.0.1:6379/15",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'prod.sqlite3'}",
        }
    )
    env.update(overrides)
    return env


def manage(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_passes_without_warnings_in_a_proper_production_environment(tmp_path):
    result = manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize("variable", ["ELSA_SECRET_KEY", "ELSA_SIGNING_KEY", "ELSA_ENCRYPTION_KEYS"])
def test_production_refuses_to_start_without_a_secret(tmp_path, variable):
    env = production_env(tmp_path)
    del env[variable]
    result = manage(env, "check")
    assert result.returncode != 0
    assert f"{variable} is required" in result.stderr
    assert not (tmp_path / "keys.json").exists()


@pytest.mark.parametrize(
    ("variable", "weak"),
    [("ELSA_SECRET_KEY", "changeme"), ("ELSA_SIGNING_KEY", "short"), ("ELSA_ENCRYPTION_KEYS", "not-a-fernet-key")],
)
def test_production_refuses_a_weak_secret_without_echoing_it(tmp_path, variable, weak):
    result = manage(production_env(tmp_path, **{variable: weak}), "check")
    assert result.returncode != 0
    assert variable in result.stderr
    assert weak not in result.stderr.replace(variable, "")


def test_production_refuses_debug(tmp_path):
    result = manage(production_env(tmp_path, ELSA_DEBUG="true"), "check")
    assert result.returncode != 0
    assert "ELSA_DEBUG" in result.stderr


def test_production_refuses_a_local_memory_cache(tmp_path):
    env = production_env(tmp_path)
    del env["CACHE_URL"]
    result = manage(env, "check")
    assert result.returncode != 0
    assert "CACHE_URL" in result.stderr
