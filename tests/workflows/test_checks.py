"""System checks of the workflows app: one test per id."""

from workflows.checks import check_limits


def ids() -> set[str]:
    return {error.id for error in check_limits()}


def test_default_settings_pass():
    assert ids() == set()


def test_e001_definition_size_limit(settings):
    settings.ELSA_DEFINITION_MAX_BYTES = 0
    assert ids() == {"workflows.E001"}


def test_e002_step_cap(settings):
    settings.ELSA_WORKFLOW_MAX_STEPS = 0
    assert ids() == {"workflows.E002"}


def test_e003_expression_limits(settings):
    settings.ELSA_EXPRESSION_MAX_COMPREHENSIONS = 50
    assert ids() == {"workflows.E003"}


def test_e004_run_time_limits(settings):
    settings.ELSA_WORKFLOW_RUN_SOFT_TIME_LIMIT = settings.ELSA_WORKFLOW_RUN_TIME_LIMIT
    assert ids() == {"workflows.E004"}
