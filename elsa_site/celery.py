"""The Celery application shared by the web process, workers and beat."""

import os

from celery import Celery
from celery.signals import setup_logging, worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "elsa_site.settings")

app = Celery("elsa")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def _use_django_logging(**kwargs):
    # Workers log through the same JSON formatter and redaction filter as the web process.
    import logging.config

    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


@worker_process_init.connect
def _freeze_startup_heap(**kwargs):
    # Each pool process, once the tasks are imported: collections skip the start-up heap.
    from elsa_site.heap import freeze_startup_heap

    freeze_startup_heap()


@app.task(name="elsa.ping")
def ping() -> str:
    """A no-op round trip: readiness probe for workers and the benchmark baseline."""
    return "pong"
