"""GET|PUT /users/{userId}/preferences: the member's own or an admin's; validated field by field."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.conftest import auth


def enrol(client: TestClient, email: str) -> str:
    created = client.post("/users", json={"email": email, "name": "Gus"}, headers=auth())
    assert created.status_code == 201, created.text
    return str(created.json()["data"]["userId"])


def test_every_channel_is_on_until_the_member_changes_it(client: TestClient) -> None:
    user_id = enrol(client, "gus@example.com")
    answer = client.get(f"/users/{user_id}/preferences", headers=auth("member", user_id))
    assert answer.status_code == 200
    assert answer.json()["data"] == {"userId": user_id, "email": True, "sms": True, "push": True, "updatedAt": None}


def test_a_member_replaces_its_own_preferences_and_reads_them_back(client: TestClient) -> None:
    user_id = enrol(client, "gus@example.com")
    body = {"email": False, "sms": True, "push": False}
    put = client.put(f"/users/{user_id}/preferences", json=body, headers=auth("member", user_id))
    assert put.status_code == 200, put.text
    assert {k: put.json()["data"][k] for k in body} == body
    assert put.json()["data"]["updatedAt"] is not None
    again = client.put(f"/users/{user_id}/preferences", json=body, headers=auth("member", user_id))
    assert {k: again.json()["data"][k] for k in body} == body  # replacing with the same is idempotent
    read = client.get(f"/users/{user_id}/preferences", headers=auth()).json()["data"]
    assert {k: read[k] for k in body} == body


def test_an_admin_may_change_a_members_preferences(client: TestClient) -> None:
    user_id = enrol(client, "gus@example.com")
    put = client.put(f"/users/{user_id}/preferences", json={"email": True, "sms": False, "push": True}, headers=auth())
    assert put.status_code == 200
    assert put.json()["data"]["sms"] is False


def test_another_members_preferences_are_not_found_and_service_tokens_are_forbidden(client: TestClient) -> None:
    owner = enrol(client, "gus@example.com")
    other = enrol(client, "ida@example.com")
    body = {"email": False, "sms": False, "push": False}
    assert client.get(f"/users/{owner}/preferences", headers=auth("member", other)).status_code == 404
    assert client.put(f"/users/{owner}/preferences", json=body, headers=auth("member", other)).status_code == 404
    assert client.get(f"/users/{owner}/preferences", headers=auth("service", "pos")).status_code == 403
    assert client.get(f"/users/{owner}/preferences").status_code == 401
    assert client.get(f"/users/{owner}/preferences", headers=auth()).json()["data"]["email"] is True


def test_an_unknown_member_is_not_found(client: TestClient) -> None:
    body = {"email": False, "sms": False, "push": False}
    assert client.get("/users/usr_nobody/preferences", headers=auth()).status_code == 404
    assert client.put("/users/usr_nobody/preferences", json=body, headers=auth()).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "yes", "sms": True, "push": True}, "email"),
        ({"email": True, "sms": 1, "push": True}, "sms"),
        ({"email": True, "sms": True}, "push"),
        ({"email": True, "sms": True, "push": True, "fax": True}, "fax"),
    ],
)
def test_a_bad_body_is_a_400_naming_the_field_and_changes_nothing(
    client: TestClient, body: dict[str, object], field: str
) -> None:
    user_id = enrol(client, "gus@example.com")
    answer = client.put(f"/users/{user_id}/preferences", json=body, headers=auth())
    assert answer.status_code == 400
    assert answer.json()["error"]["details"]["errors"][0]["field"] == field
    assert client.get(f"/users/{user_id}/preferences", headers=auth()).json()["data"]["updatedAt"] is None
