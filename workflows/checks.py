"""System checks of the workflows engine (ids workflows.E001...)."""

from django.conf import settings
from django.core.checks import Error, Tags, register


@register(Tags.security)
def check_limits(app_configs=None, **kwargs) -> list[Error]:
    """Unbounded definitions, expressions or runs would let one author exhaust a worker."""
    errors = []
    if not 0 < settings.ELSA_DEFINITION_MAX_BYTES <= 16 * 1024 * 1024:
        errors.append(Error("ELSA_DEFINITION_MAX_BYTES must be between 1 and 16 MiB.", id="workflows.E001"))
    if not 0 < settings.ELSA_WORKFLOW_MAX_STEPS <= 1_000_000:
        errors.append(Error("ELSA_WORKFLOW_MAX_STEPS must be between 1 and 1,000,000.", id="workflows.E002"))
    if (
        not 0 < settings.ELSA_EXPRESSION_MAX_LENGTH <= 100_000
        or not 0 <= settings.ELSA_EXPRESSION_MAX_COMPREHENSIONS <= 10
    ):
        errors.append(
            Error(
                "ELSA_EXPRESSION_MAX_LENGTH must be 1..100000 and ELSA_EXPRESSION_MAX_COMPREHENSIONS 0..10.",
                id="workflows.E003",
            )
        )
    if not 0 < settings.ELSA_WORKFLOW_RUN_SOFT_TIME_LIMIT < settings.ELSA_WORKFLOW_RUN_TIME_LIMIT:
        errors.append(
            Error(
                "ELSA_WORKFLOW_RUN_SOFT_TIME_LIMIT must be above 0 and below ELSA_WORKFLOW_RUN_TIME_LIMIT.",
                id="workflows.E004",
            )
        )
    return errors
