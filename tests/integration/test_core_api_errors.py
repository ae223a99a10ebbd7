"""Bad input, limits and refusals of the loyalty API: a clear envelope naming the field, and nothing
partially written."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from accrue.bootstrap import Application, bootstrap
from accrue.entrypoints.api.app import create_app
from tests.conftest import auth, make_settings


def table_counts(app: Application) -> dict[str, int]:
    with sqlite3.connect(app.settings.db) as conn:
        return {
            table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("members", "transfers", "orders", "outbox", "idempotency_keys")
        }


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert body["success"] is False
    assert set(body["error"]) == {"code", "message", "details"}
    error: dict[str, Any] = body["error"]
    return error


def enrol(client: TestClient, email: str = "ann@example.com", **extra: Any) -> dict[str, Any]:
    response = client.post("/users", json={"email": email, "name": "Ann", **extra}, headers=auth())
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


# -- malformed and invalid input ------------------------------------------------------------------


def test_malformed_json_is_a_400_on_the_body_and_writes_nothing(client: TestClient, app: Application) -> None:
    before = table_counts(app)
    response = client.post(
        "/transactions",
        content=b'{"memberId": "m-1", "transactionAmount": ',
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"]["errors"][0]["field"] == "body"
    assert error["message"].startswith("body: is not valid JSON")
    assert table_counts(app) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"memberId": "m-1", "transactionAmount": "-1", "transactionType": "purchase"}, "transactionAmount"),
        ({"memberId": "m-1", "transactionAmount": -1, "transactionType": "purchase"}, "transactionAmount"),
        ({"memberId": "m-1", "transactionAmount": "1e3", "transactionType": "purchase"}, "transactionAmount"),
        ({"memberId": "m-1", "transactionAmount": True, "transactionType": "purchase"}, "transactionAmount"),
        ({"memberId": "m-1", "transactionType": "purchase"}, "transactionAmount"),
        ({"memberId": "has space", "transactionAmount": "1", "transactionType": "purchase"}, "memberId"),
        ({"memberId": "m-1", "transactionAmount": "1", "transactionType": "pur-chase"}, "transactionType"),
        ({"memberId": "m-1", "transactionAmount": "1", "transactionType": "purchase", "points": 5}, "points"),
        ({"memberId": "m-1", "transactionAmount": "1", "transactionType": "purchase", "email": "nope"}, "email"),
    ],
)
def test_an_invalid_transaction_is_a_400_naming_the_field_and_writes_nothing(
    client: TestClient, app: Application, body: dict[str, Any], field: str
) -> None:
    before = table_counts(app)
    response = client.post("/transactions", json=body, headers=auth())
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["code"] == "VALIDATION_ERROR"
    assert error["message"].startswith(f"{field}:")
    assert "Value error" not in error["message"]  # the rule, not pydantic's wrapping
    assert [e["field"] for e in error["details"]["errors"]] == [field]
    assert table_counts(app) == before


def test_balance_lifetime_and_tier_cannot_be_set_through_the_api(client: TestClient, app: Application) -> None:
    for extra in ({"points": 5000}, {"tier": "PLATINUM"}, {"balance": 1}, {"lifetime": 1}):
        response = client.post("/users", json={"email": "x@example.com", "name": "X", **extra}, headers=auth())
        assert response.status_code == 400
        assert error_of(response)["details"]["errors"][0]["field"] == next(iter(extra))
    assert table_counts(app)["members"] == 0


def test_an_unknown_query_parameter_is_refused_rather_than_ignored(client: TestClient) -> None:
    response = client.get("/orders", params={"user_id": "someone"}, headers=auth())
    assert response.status_code == 400
    assert error_of(response)["details"]["field"] == "user_id"


def test_a_cursor_outside_the_alphabet_is_a_400_naming_the_cursor(client: TestClient) -> None:
    response = client.get("/orders", params={"cursor": "not a cursor!"}, headers=auth())
    assert response.status_code == 400
    assert error_of(response)["details"]["errors"][0]["field"] == "cursor"


def test_an_idempotency_key_longer_than_255_characters_is_refused(client: TestClient, app: Application) -> None:
    response = client.post(
        "/transactions",
        json={"memberId": "m-1", "transactionAmount": "1", "transactionType": "purchase"},
        headers={**auth(), "Idempotency-Key": "k" * 256},
    )
    assert response.status_code == 400
    assert error_of(response)["details"]["field"] == "Idempotency-Key"
    assert table_counts(app)["members"] == 0


def test_unknown_paths_and_methods_answer_in_the_envelope(client: TestClient) -> None:
    missing = client.get("/nowhere", headers=auth())
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "NOT_FOUND"
    wrong_method = client.put("/health", headers=auth())
    assert wrong_method.status_code == 405
    assert error_of(wrong_method)["code"] == "METHOD_NOT_ALLOWED"


# -- body size ------------------------------------------------------------------------------------


def test_a_body_over_one_mebibyte_is_refused_with_413_before_it_is_read(client: TestClient, app: Application) -> None:
    big = b'{"email": "a@example.com", "name": "' + b"x" * (1024 * 1024) + b'"}'
    response = client.post("/users", content=big, headers={**auth(), "Content-Type": "application/json"})
    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "PAYLOAD_TOO_LARGE"
    assert error["details"]["limitBytes"] == 1024 * 1024
    assert table_counts(app)["members"] == 0


def test_a_chunked_body_that_grows_past_the_limit_is_refused_with_413(client: TestClient, app: Application) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"email": "a@example.com", "name": "'
        for _ in range(40):
            yield b"x" * 32 * 1024
        yield b'"}'

    response = client.post("/users", content=chunks(), headers={**auth(), "Content-Type": "application/json"})
    assert response.status_code == 413
    assert error_of(response)["code"] == "PAYLOAD_TOO_LARGE"
    assert error_of(response)["details"] == {"limitBytes": 1024 * 1024}
    assert table_counts(app)["members"] == 0


def test_a_body_just_under_the_limit_is_read(client: TestClient) -> None:
    name = "x" * 150
    response = client.post("/users", json={"email": "a@example.com", "name": name}, headers=auth())
    assert response.status_code == 201


# -- rate limiting --------------------------------------------------------------------------------


@pytest.fixture
def limited_client(tmp_path: Path) -> Iterator[TestClient]:
    application = bootstrap(make_settings(tmp_path, rate_limit_per_second=1, rate_limit_burst=3))
    with TestClient(create_app(application)) as test_client:
        yield test_client
    application.close()


def test_a_caller_over_its_rate_gets_429_with_retry_after_and_others_are_unaffected(
    limited_client: TestClient,
) -> None:
    statuses = [limited_client.get("/orders", headers=auth("service", "pos-1")).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]  # the burst
    limited = limited_client.get("/orders", headers=auth("service", "pos-1"))
    assert limited.status_code == 429
    assert error_of(limited)["code"] == "RATE_LIMIT_EXCEEDED"
    assert int(limited.headers["Retry-After"]) >= 1
    assert 0 < error_of(limited)["details"]["retryAfterSeconds"] <= 1
    # The bucket is per token subject: another caller still has its whole burst.
    assert limited_client.get("/orders", headers=auth("service", "pos-2")).status_code == 200
    # Health checks are never limited.
    assert limited_client.get("/health").status_code == 200


def test_a_rate_limited_post_does_not_consume_its_idempotency_key(limited_client: TestClient) -> None:
    headers = {**auth("service", "pos-9"), "Idempotency-Key": "k-1"}
    body = {"memberId": "m-9", "transactionAmount": "10", "transactionType": "purchase"}
    for _ in range(3):
        limited_client.get("/orders", headers=auth("service", "pos-9"))
    refused = limited_client.post("/transactions", json=body, headers=headers)
    assert refused.status_code == 429
    limiter = limited_client.app.state.rate_limiter  # type: ignore[attr-defined]
    limiter._buckets.clear()  # time passes: the bucket refills
    accepted = limited_client.post("/transactions", json=body, headers=headers)
    assert accepted.status_code == 200, accepted.text


# -- refusals by the rules ------------------------------------------------------------------------


def test_a_duplicate_email_in_other_case_is_a_409(client: TestClient, app: Application) -> None:
    enrol(client, "Ann@Example.com")
    before = table_counts(app)
    response = client.post("/users", json={"email": "ann@EXAMPLE.com", "name": "Ann"}, headers=auth())
    assert response.status_code == 409
    assert error_of(response)["details"]["field"] == "email"
    assert table_counts(app) == before


def test_redeeming_more_than_the_balance_is_a_409_and_writes_nothing(client: TestClient, app: Application) -> None:
    user = enrol(client)
    before = table_counts(app)
    response = client.post(f"/points/{user['userId']}/redeem", json={"points": 101}, headers=auth())
    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "CONFLICT"
    assert error["details"] == {"field": "points", "balance": 100, "requested": 101}
    assert table_counts(app) == before
    points = client.get(f"/points/{user['userId']}", headers=auth()).json()["data"]
    assert points["balance"] == 100

    redeemed = client.post(f"/points/{user['userId']}/redeem", json={"points": 100}, headers=auth())
    assert redeemed.status_code == 200
    assert redeemed.json()["data"]["balance"] == 0


def test_an_order_for_an_unknown_user_is_a_404_and_writes_nothing(client: TestClient, app: Application) -> None:
    response = client.post("/orders", json={"userId": "ghost", "amount": "10.00"}, headers=auth())
    assert response.status_code == 404
    assert table_counts(app)["orders"] == 0


def test_an_amount_finer_than_its_currency_is_a_422_and_writes_nothing(client: TestClient, app: Application) -> None:
    user = enrol(client)
    before = table_counts(app)
    response = client.post(
        "/orders", json={"userId": user["userId"], "amount": "100.5", "currency": "JPY"}, headers=auth()
    )
    assert response.status_code == 422
    assert error_of(response)["details"]["field"] == "amount"
    assert table_counts(app) == before
    lowercase = client.post(
        "/orders", json={"userId": user["userId"], "amount": "100", "currency": "jpy"}, headers=auth()
    )
    assert lowercase.status_code == 400


def test_an_order_earns_purchase_points_and_a_repeated_order_id_is_a_409(client: TestClient) -> None:
    user = enrol(client)
    body = {
        "userId": user["userId"],
        "amount": "49.90",
        "currency": "USD",
        "orderId": "web-1001",
        "items": [{"sku": "TEA-1", "quantity": 2, "price": "24.95", "category": "tea"}],
    }
    created = client.post("/orders", json=body, headers=auth())
    assert created.status_code == 201
    order = created.json()["data"]
    assert order["orderId"] == "web-1001"
    assert order["pointsEarned"] == 4
    assert order["status"] == "confirmed"
    assert order["amount"] == "49.90"
    assert order["items"] == [{"sku": "TEA-1", "quantity": 2, "price": "24.95", "category": "tea"}]
    again = client.post("/orders", json=body, headers=auth())
    assert again.status_code == 409
    member = client.get(f"/users/{user['userId']}", headers=auth()).json()["data"]
    assert member["totalSpent"] == "49.90"
    assert member["points"] == 104
    assert member["lifetime"] == 4


# -- pagination -----------------------------------------------------------------------------------


def collect(client: TestClient, path: str, key: str, **params: Any) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        query = dict(params)
        if cursor:
            query["cursor"] = cursor
        data = client.get(path, params=query, headers=auth()).json()["data"]
        pages.append(data[key])
        cursor = data["nextCursor"]
        if cursor is None:
            return pages


def test_history_pages_newest_first_without_gaps_or_overlaps(client: TestClient) -> None:
    for n in range(44):
        client.post(
            "/transactions",
            json={"memberId": "pager", "transactionAmount": str(10 * (n + 1)), "transactionType": "purchase"},
            headers=auth(),
        )
    pages = collect(client, "/points/pager/history", "history", limit=20)
    assert [len(page) for page in pages] == [20, 20, 4]
    entries = [entry for page in pages for entry in page]
    assert len({e["transactionId"] for e in entries}) == 44
    assert [e["points"] for e in entries] == [n + 1 for n in reversed(range(44))]
    assert all(e["type"] == "credit" and e["reason"] == "earn" for e in entries)
    assert entries[0]["balance"] == sum(range(1, 45))
    # An exact multiple of the page size ends without an empty extra page.
    assert [len(page) for page in collect(client, "/points/pager/history", "history", limit=22)] == [22, 22]


def test_orders_page_by_cursor_and_filter_by_user_and_status(client: TestClient) -> None:
    first = enrol(client, "a@example.com")["userId"]
    second = enrol(client, "b@example.com")["userId"]
    for n in range(7):
        for user_id in (first, second):
            response = client.post("/orders", json={"userId": user_id, "amount": f"{n + 1}.00"}, headers=auth())
            assert response.status_code == 201
    pages = collect(client, "/orders", "orders", userId=first, limit=3)
    assert [len(page) for page in pages] == [3, 3, 1]
    orders = [o for page in pages for o in page]
    assert {o["userId"] for o in orders} == {first}
    assert [o["amount"] for o in orders] == [f"{n}.00" for n in range(7, 0, -1)]
    everyone = [o for page in collect(client, "/orders", "orders", limit=5) for o in page]
    assert len(everyone) == 14
    assert collect(client, "/orders", "orders", status="refunded") == [[]]
    assert len(collect(client, "/orders", "orders", status="confirmed", limit=100)[0]) == 14
