import json

import pytest

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.elsa_site.urls_errors")]


def assert_error_body(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert {"code", "message"} <= set(body["error"])
    if code:
        assert body["error"]["code"] == code
    return body


def test_unknown_api_path_is_a_json_404(client):
    assert_error_body(client.get("/elsa/api/no-such-thing"), 404, "not_found")


def test_unhandled_exception_is_a_json_500_without_details(client):
    client.raise_request_exception = False
    response = client.get("/elsa/api/_test/crash")
    body = assert_error_body(response, 500, "server_error")
    assert "hunter2" not in json.dumps(body)
    assert "Traceback" not in response.content.decode()


def test_wrong_method_is_405(client):
    assert_error_body(client.get("/elsa/api/_test/echo"), 405, "method_not_allowed")


def test_non_json_body_is_415(client):
    response = client.post("/elsa/api/_test/echo", data="a=1", content_type="application/x-www-form-urlencoded")
    assert_error_body(response, 415, "unsupported_media_type")


def test_malformed_json_is_400(client):
    response = client.post("/elsa/api/_test/echo", data="{not json", content_type="application/json")
    assert_error_body(response, 400, "malformed_request")


def test_body_over_one_mebibyte_is_413(client):
    big = json.dumps({"blob": "x" * (1024 * 1024 + 10)})
    response = client.post("/elsa/api/_test/echo", data=big, content_type="application/json")
    assert_error_body(response, 413, "payload_too_large")


def test_domain_error_keeps_its_status_and_message(client):
    body = assert_error_body(client.get("/elsa/api/_test/conflict"), 409, "conflict")
    assert body["error"]["message"] == "The instance is already finished."
