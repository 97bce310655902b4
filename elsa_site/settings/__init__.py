"""Settings entry point: base settings, hardened when ELSA_ENV=production."""

from .base import *  # noqa: F403
from .base import IS_PRODUCTION

if IS_PRODUCTION:
    from .production import *  # noqa: F403
