"""System checks of the audit app, one test per id."""

import pytest
from django.test import override_settings

from audit.checks import check_append_only_triggers, check_checkpoint_freshness, check_checkpoint_key
from tests.audit.helpers import triggers_disabled


def ids(errors) -> list[str]:
    return [error.id for error in errors]


@override_settings(ELSA_AUDIT_CHECKPOINT_KEY="short")
def test_short_checkpoint_key_is_audit_e001():
    assert "audit.E001" in ids(check_checkpoint_key(None))


@override_settings(ELSA_AUDIT_CHECKPOINT_KEY="a-dedicated-random-checkpoint-key-0123456789")
def test_long_key_passes():
    assert check_checkpoint_key(None) == []


@pytest.mark.parametrize(
    ("interval", "max_age"),
    [
        (60.0, 119.0),  # one late beat would fail a sound chain
        (0.0, 300.0),  # no heartbeat at all
        (-60.0, 300.0),
    ],
)
def test_checkpoint_max_age_below_two_intervals_or_no_interval_is_audit_e002(settings, interval, max_age):
    settings.ELSA_AUDIT_CHECKPOINT_INTERVAL_SECONDS = interval
    settings.ELSA_AUDIT_CHECKPOINT_MAX_AGE_SECONDS = max_age
    assert ids(check_checkpoint_freshness(None)) == ["audit.E002"]


def test_default_checkpoint_max_age_is_five_intervals_and_passes(settings):
    assert settings.ELSA_AUDIT_CHECKPOINT_MAX_AGE_SECONDS == 5 * settings.ELSA_AUDIT_CHECKPOINT_INTERVAL_SECONDS
    assert check_checkpoint_freshness(None) == []
    settings.ELSA_AUDIT_CHECKPOINT_MAX_AGE_SECONDS = 2 * settings.ELSA_AUDIT_CHECKPOINT_INTERVAL_SECONDS
    assert check_checkpoint_freshness(None) == []


def test_checks_are_registered_under_security():
    from django.core.checks import registry

    for check in (check_checkpoint_key, check_checkpoint_freshness):
        assert check in registry.registry.get_checks(include_deployment_checks=True)
        assert "security" in check.tags


@pytest.mark.django_db
@pytest.mark.postgres
def test_intact_triggers_pass():
    assert check_append_only_triggers(None, databases=["default"]) == []


@pytest.mark.django_db
@pytest.mark.postgres
def test_disabled_trigger_is_audit_e003():
    with triggers_disabled():
        errors = check_append_only_triggers(None, databases=["default"])
    assert ids(errors) == ["audit.E003"]
    assert "audit_auditevent.audit_event_append_only" in errors[0].msg


@pytest.mark.postgres
def test_a_database_before_the_pending_table_migration_can_still_migrate(transactional_db):
    # Upgrading from audit 0001: the pending table and its triggers do not exist yet, and the
    # check (which `migrate` runs) must not refuse the migration that creates them.
    from django.core.management import call_command

    call_command("migrate", "audit", "0001", verbosity=0)
    try:
        assert check_append_only_triggers(None, databases=["default"]) == []
    finally:
        call_command("migrate", "audit", verbosity=0)
    assert check_append_only_triggers(None, databases=["default"]) == []
