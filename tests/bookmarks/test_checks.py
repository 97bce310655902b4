"""bookmarks.E0xx security checks: one test per id."""

from bookmarks.checks import check_bookmark_settings


def ids() -> set[str]:
    return {error.id for error in check_bookmark_settings()}


def test_default_settings_pass():
    assert ids() == set()


def test_e001_resume_rate_must_be_a_rate(settings):
    settings.ELSA_RESUME_RATE = "lots"
    assert "bookmarks.E001" in ids()


def test_e002_max_failures_must_be_positive(settings):
    settings.ELSA_RESUME_MAX_FAILURES = 0
    assert "bookmarks.E002" in ids()


def test_e003_default_ttl_must_be_positive_and_within_the_max(settings):
    settings.ELSA_BOOKMARK_DEFAULT_TTL_SECONDS = 0
    assert "bookmarks.E003" in ids()
    settings.ELSA_BOOKMARK_DEFAULT_TTL_SECONDS = settings.ELSA_BOOKMARK_MAX_TTL_SECONDS + 1
    assert "bookmarks.E003" in ids()


def test_e004_public_url_must_be_an_absolute_base_url(settings):
    settings.ELSA_PUBLIC_URL = "flows.example.com"
    assert "bookmarks.E004" in ids()
    settings.ELSA_PUBLIC_URL = "https://flows.example.com/?x=1"
    assert "bookmarks.E004" in ids()


def test_e005_rate_limiting_cannot_be_off_in_production(settings):
    settings.ELSA_ENV = "production"
    settings.RATELIMIT_ENABLE = False
    assert "bookmarks.E005" in ids()
    settings.ELSA_ENV = "development"
    assert "bookmarks.E005" not in ids()


def test_checks_run_with_manage_py_check(settings):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.ELSA_RESUME_MAX_FAILURES = 0
    try:
        call_command("check", tags=["security"])
    except SystemCheckError as exc:
        assert "bookmarks.E002" in str(exc)
    else:
        raise AssertionError("check passed with an insecure setting")
