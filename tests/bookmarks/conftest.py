"""Bookmarks test fixtures: suspended instances waiting at a real WaitForResume, fresh rate-limit counters."""

import pytest


@pytest.fixture(autouse=True)
def _bookmark_settings(request, settings):
    # Generous per-IP limit by default (the rate-limit tests set their own); counters start at zero.
    settings.ELSA_RESUME_RATE = "100000/m"
    settings.ELSA_RESUME_ALLOW_GET = True
    if "django_db" in request.keywords or {"transactional_db", "live_worker", "live_server"} & set(
        request.fixturenames
    ):
        from django.core.cache import cache

        if hasattr(cache, "delete_pattern"):
            # Only the rate-limit keys: the same Redis database is the live worker's broker.
            cache.delete_pattern("rl:*")
        else:
            cache.clear()


@pytest.fixture
def bookmarks_worker(celery_worker_factory, settings, tmp_path, live_server, transactional_db):
    """A real Celery worker of our own, on a queue of our own, writing mail to files under tmp_path.

    A separate queue: the session's shared live worker (if another test started it) must not take
    these steps, since it sends mail to memory and builds links to another public URL.
    """
    import uuid

    from elsa_site.celery import app

    queue = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-bookmarks-{uuid.uuid4().hex[:8]}"
    original = app.conf.task_default_queue
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    app.conf.task_default_queue = queue
    mail_dir = tmp_path / "mail"
    mail_dir.mkdir()
    try:
        with celery_worker_factory(
            extra_env={"ELSA_TEST_EMAIL_DIR": str(mail_dir), "ELSA_PUBLIC_URL": live_server.url}
        ) as worker:
            worker.mail_dir = mail_dir
            yield worker
    finally:
        app.conf.task_default_queue = original
