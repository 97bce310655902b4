import pytest

from tests.identity.factories import principal_headers

pytestmark = pytest.mark.django_db


def test_metrics_require_authentication(client):
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response.has_header("WWW-Authenticate")


def test_metrics_require_the_read_metrics_permission(client):
    assert client.get("/metrics", **principal_headers("read:audit-events")).status_code == 403


def test_metrics_are_prometheus_text_counting_requests_by_route(client):
    client.get("/health/live")
    response = client.get("/metrics", **principal_headers("read:metrics"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert 'elsa_http_requests_total{method="GET",route="health/live",status="200"}' in text


def test_made_up_http_methods_share_one_other_label(client):
    for i in range(20):
        client.generic(f"X{i:04d}", "/health/live")
    text = client.get("/metrics", **principal_headers("read:metrics")).content.decode()
    assert 'elsa_http_requests_total{method="other",route="health/live"' in text
    assert 'method="X0001"' not in text
