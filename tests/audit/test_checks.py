"""System checks of the audit app, one test per id."""

import pytest
from django.test import override_settings

from audit.checks import check_append_only_triggers, check_checkpoint_key
from tests.audit.helpers import triggers_disabled


def ids(errors) -> list[str]:
    return [error.id for error in errors]


@override_settings(ELSA_AUDIT_CHECKPOINT_KEY="short")
def test_short_checkpoint_key_is_audit_e001():
    assert "audit.E001" in ids(check_checkpoint_key(None))


@override_settings(ELSA_AUDIT_CHECKPOINT_KEY="a-dedicated-random-checkpoint-key-0123456789")
def test_long_key_passes():
    assert check_checkpoint_key(None) == []


def test_checks_are_registered_under_security():
    from django.core.checks import registry

    assert check_checkpoint_key in registry.registry.get_checks(include_deployment_checks=True)
    assert "security" in check_checkpoint_key.tags


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
