"""System checks of the executors app, one test per id."""

from workflows.executors.checks import check_breaker_settings, check_http_allowlist


def test_e001_breaker_settings_must_be_positive(settings):
    assert check_breaker_settings() == []
    settings.ELSA_BREAKER_HALF_OPEN_PROBES = 0
    settings.ELSA_BREAKER_RESET_SECONDS = 0
    assert [e.id for e in check_breaker_settings()] == ["executors.E001", "executors.E001"]


def test_e002_no_wildcards_in_the_http_allowlist_in_production(settings):
    settings.ELSA_EXECUTOR_HTTP_ALLOWLIST = ["*.internal"]
    assert check_http_allowlist() == []
    settings.ELSA_ENV = "production"
    assert [e.id for e in check_http_allowlist()] == ["executors.E002"]
