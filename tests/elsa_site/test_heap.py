"""The start-up heap is frozen (gc.freeze) in every kind of process: setup, web workers, Celery pool processes."""

import gc
import importlib
import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]


def test_django_setup_freezes_the_heap_after_every_app_is_ready():
    # A fresh interpreter: nothing frozen but what django.setup() froze.
    code = "import gc, django; django.setup(); print(gc.get_freeze_count())"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=os.environ, capture_output=True, text=True, check=True
    ).stdout
    # Tens of thousands of objects: Django, DRF, Celery and the project's modules.
    assert int(out.strip().splitlines()[-1]) > 20_000
    # The freezing app comes last, so every other app's ready() has run before it freezes.
    assert settings.INSTALLED_APPS[-1] == "elsa_site"


def test_web_workers_freeze_once_the_urlconf_is_loaded():
    gc.unfreeze()
    import elsa_site.wsgi

    importlib.reload(elsa_site.wsgi)
    assert gc.get_freeze_count() > 20_000


def test_celery_pool_processes_freeze_at_start():
    from celery.signals import worker_process_init

    gc.unfreeze()
    worker_process_init.send(sender=None)
    assert gc.get_freeze_count() > 20_000
