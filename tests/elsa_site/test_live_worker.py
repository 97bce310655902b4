import pytest

from elsa_site.celery import ping


@pytest.mark.live_worker
def test_live_worker_runs_a_real_task(live_worker):
    assert ping.apply_async().get(timeout=30) == "pong"
    assert live_worker.child_pids(), "the prefork pool should have child processes"
