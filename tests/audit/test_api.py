"""HTTP API: search with filters and cursor pagination, read one event, verify; read:audit-events required."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from audit.actors import Actor
from audit.services import audit_checkpoint_create, audit_record, audit_seal
from tests.audit.helpers import append_events, triggers_disabled
from tests.identity.factories import principal_headers

pytestmark = pytest.mark.django_db

LIST = "/elsa/api/audit-events"


@pytest.fixture
def reader():
    return principal_headers("read:audit-events")


def record(**fields):
    fields.setdefault("event_type", "workflow.definition.published")
    fields.setdefault("action", "published")
    fields.setdefault("actor", Actor(type="user", id="u-1", name="alice"))
    with transaction.atomic():
        audit_record(**fields)
    audit_seal()  # as the after-commit hook would


@pytest.mark.parametrize("path", [LIST, f"{LIST}/1", f"{LIST}/1/verify"])
def test_anonymous_request_is_401(api_client, path):
    append_events(1)
    response = api_client.get(path)
    assert response.status_code == 401
    assert "WWW-Authenticate" in response


@pytest.mark.parametrize("path", [LIST, f"{LIST}/1", f"{LIST}/1/verify"])
def test_principal_without_permission_is_403(api_client, path):
    append_events(1)
    response = api_client.get(path, **principal_headers("read:workflow-instances"))
    assert response.status_code == 403


def test_list_returns_events_with_their_hashes(api_client, reader):
    events = append_events(3)
    response = api_client.get(LIST, **reader)
    assert response.status_code == 200
    body = response.json()
    ids = [item["id"] for item in body["items"] if item["event_type"] == "workflow.instance.started"]
    assert ids == [e.id for e in events]
    item = body["items"][0]
    assert item["hash"] == events[0].hash and item["previous_hash"] == events[0].previous_hash
    assert item["actor"] == {"type": "user", "id": "u-1", "name": "alice", "ip": "10.0.0.1"}
    assert item["resource"] == {"type": "workflow-instance", "id": "wi-0"}
    assert body["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "expected_actions"),
    [
        ({"event_type": "bookmark.resume"}, ["resumed"]),
        ({"action": "cancelled"}, ["cancelled"]),
        ({"result": "failure"}, ["failed-login"]),
        ({"resource_type": "bookmark"}, ["resumed"]),
        ({"resource_type": "workflow-instance", "resource_id": "wi-9"}, ["cancelled"]),
        ({"actor_id": "app-3"}, ["resumed"]),
    ],
)
def test_list_filters(api_client, reader, params, expected_actions):
    record(
        event_type="bookmark.resume",
        action="resumed",
        resource=("bookmark", "b-1"),
        actor=Actor("application", "app-3"),
    )
    record(event_type="workflow.instance.cancelled", action="cancelled", resource=("workflow-instance", "wi-9"))
    record(
        event_type="identity.login-failed", action="failed-login", result="failure", actor=Actor.anonymous("1.2.3.4")
    )
    body = api_client.get(LIST, params, **reader).json()
    assert [item["action"] for item in body["items"]] == expected_actions


def test_list_filters_by_date_range(api_client, reader):
    append_events(2)
    now = timezone.now()
    future = (now + timedelta(hours=1)).isoformat()
    past = (now - timedelta(hours=1)).isoformat()
    assert api_client.get(LIST, {"date_from": future}, **reader).json()["items"] == []
    in_range = api_client.get(
        LIST, {"date_from": past, "date_to": future, "event_type": "workflow.instance.started"}, **reader
    )
    assert len(in_range.json()["items"]) == 2
    assert api_client.get(LIST, {"date_to": past}, **reader).json()["items"] == []


def test_cursor_pagination_walks_every_event_once_in_both_orders(api_client, reader):
    append_events(7)
    for order, expected in (("asc", list(range(1, 8))), ("desc", list(range(7, 0, -1)))):
        seen, cursor = [], None
        while True:
            params = {"limit": 3, "order": order, "event_type": "workflow.instance.started"}
            if cursor:
                params["cursor"] = cursor
            body = api_client.get(LIST, params, **reader).json()
            seen += [item["id"] for item in body["items"]]
            cursor = body["next_cursor"]
            if not cursor:
                break
        assert seen == expected


@pytest.mark.parametrize(
    "params",
    [{"limit": 101}, {"limit": 0}, {"order": "sideways"}, {"cursor": "not-a-cursor"}, {"date_from": "yesterday"}],
)
def test_invalid_query_is_400(api_client, reader, params):
    response = api_client.get(LIST, params, **reader)
    assert response.status_code == 400
    assert "error" in response.json()


def test_detail_returns_one_event(api_client, reader):
    event = append_events(2)[1]
    body = api_client.get(f"{LIST}/{event.id}", **reader).json()
    assert (body["id"], body["event_id"], body["hash"]) == (event.id, str(event.event_id), event.hash)


def test_detail_of_unknown_event_is_404(api_client, reader):
    response = api_client.get(f"{LIST}/999999", **reader)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_verify_reports_an_intact_event(api_client, reader):
    append_events(3)
    body = api_client.get(f"{LIST}/3/verify", **reader).json()
    assert body["is_valid"] is True and body["first_invalid_id"] is None
    assert body["total_checked"] >= 3


@pytest.mark.postgres
def test_verify_names_the_tampered_event(api_client, reader):
    append_events(5)
    with triggers_disabled() as cursor:
        cursor.execute("UPDATE audit_auditevent SET actor_id = 'someone' WHERE id = 2")
    body = api_client.get(f"{LIST}/4/verify", **reader).json()
    assert (body["is_valid"], body["first_invalid_id"]) == (False, 2)


@pytest.mark.postgres
def test_verify_of_a_deleted_event_reports_it_missing(api_client, reader):
    append_events(5)
    with triggers_disabled() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE id = 3")
    response = api_client.get(f"{LIST}/3/verify", **reader)
    assert response.status_code == 200
    assert (response.json()["is_valid"], response.json()["first_invalid_id"]) == (False, 3)


@pytest.mark.postgres
def test_verify_of_an_event_cut_from_a_signed_tail_reports_it_missing(api_client, reader):
    append_events(5)
    audit_checkpoint_create()  # signs event 6
    with triggers_disabled() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE id >= 4")
    # Event 5's segment runs from genesis to the checkpoint; event 6's is the checkpoint's own.
    for event_id, first_invalid_id in ((5, 4), (6, 6)):
        response = api_client.get(f"{LIST}/{event_id}/verify", **reader)
        assert response.status_code == 200
        assert (response.json()["is_valid"], response.json()["first_invalid_id"]) == (False, first_invalid_id)


@pytest.mark.postgres
def test_verify_beyond_a_forged_checkpoint_is_404(api_client, reader):
    append_events(2)
    with triggers_disabled() as cursor:
        cursor.execute(
            "INSERT INTO audit_auditcheckpoint (event_id, event_hash, created, signature) VALUES (9, %s, now(), %s)",
            ["a" * 64, "0" * 64],
        )
    assert api_client.get(f"{LIST}/9/verify", **reader).status_code == 404
