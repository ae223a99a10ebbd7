"""The payments HTTP API in-process: validation naming the field, idempotent creation, reads and
listings, streamed CSV uploads with their own size limit, batch reports and the audit trail."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from accrue.bootstrap import Application, bootstrap
from accrue.domain import commands
from accrue.entrypoints.api.app import create_app
from accrue.service_layer.payments import PaymentComponents
from tests.conftest import auth, make_settings

CSV = {"Content-Type": "text/csv"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Application]:
    application = bootstrap(
        make_settings(
            tmp_path,
            workers_enabled=False,
            payment_retry_interval_seconds=0.001,
            max_body_bytes=2_000,
            payment_batch_max_bytes=20_000,
        )
    )
    yield application
    application.close()


@pytest.fixture
def client(app: Application) -> TestClient:
    return TestClient(create_app(app))


def parts(app: Application) -> PaymentComponents:
    found: PaymentComponents = app.services["payments"]
    return found


def post(client: TestClient, body: dict[str, Any], **headers: str) -> Any:
    return client.post("/payments", json=body, headers={**auth(), **headers})


def error(response: Any) -> tuple[int, str, str]:
    body = response.json()["error"]
    details = body["details"]
    field = details.get("field") or details["errors"][0]["field"]
    return response.status_code, body["code"], field


def test_a_payment_is_accepted_as_pending_in_camel_or_snake_case(client: TestClient) -> None:
    created = post(client, {"paymentId": "pay_1", "amount": "99.99", "currency": "EUR"})
    assert created.status_code == 201
    assert created.json() == {"success": True, "data": {"paymentId": "pay_1", "status": "pending"}}
    snake = post(client, {"payment_id": "pay_2", "amount": 12.5})
    assert snake.status_code == 201
    got = client.get("/payments/pay_2", headers=auth()).json()["data"]
    assert (got["amount"], got["currency"], got["status"], got["attempts"]) == ("12.50", "USD", "pending", 0)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"amount": "10.00"}, (400, "VALIDATION_ERROR", "paymentId")),
        ({"paymentId": "p"}, (400, "VALIDATION_ERROR", "amount")),
        ({"paymentId": "p", "amount": "0"}, (400, "VALIDATION_ERROR", "amount")),
        ({"paymentId": "p", "amount": -5}, (400, "VALIDATION_ERROR", "amount")),
        ({"paymentId": "p", "amount": "10", "currency": "XYZ"}, (400, "VALIDATION_ERROR", "currency")),
        ({"paymentId": "p", "amount": "10.001"}, (422, "UNPROCESSABLE", "amount")),
        ({"paymentId": "p", "amount": "10.5", "currency": "JPY"}, (422, "UNPROCESSABLE", "amount")),
        ({"paymentId": "p", "amount": "10", "userId": "nobody"}, (404, "NOT_FOUND", "userId")),
        ({"paymentId": "p p", "amount": "10"}, (400, "VALIDATION_ERROR", "paymentId")),
    ],
)
def test_a_bad_payment_is_refused_naming_the_field_and_nothing_is_stored(
    client: TestClient, app: Application, body: dict[str, Any], expected: tuple[int, str, str]
) -> None:
    assert error(post(client, body)) == expected
    assert app.bus.query(lambda uow: uow.payments.get("p")) is None


def test_the_same_payment_again_gets_the_same_answer_and_another_body_a_conflict(
    client: TestClient, app: Application
) -> None:
    first = post(client, {"paymentId": "pay_same", "amount": "10.5"})
    again = post(client, {"paymentId": "pay_same", "amount": "10.50", "currency": "USD"})
    assert (first.status_code, again.status_code) == (201, 201) and first.json() == again.json()
    assert error(post(client, {"paymentId": "pay_same", "amount": "11"})) == (409, "CONFLICT", "paymentId")
    assert parts(app).queue.counts().visible == 1
    keyed = post(client, {"paymentId": "pay_key", "amount": "1"}, **{"Idempotency-Key": "k-1"})
    replayed = post(client, {"paymentId": "pay_key", "amount": "1"}, **{"Idempotency-Key": "k-1"})
    assert replayed.headers["Idempotent-Replayed"] == "true" and replayed.json() == keyed.json()


def test_members_see_only_their_own_payments(client: TestClient, app: Application) -> None:
    app.bus.handle(commands.CreateMember(email="dee@example.com", name="Dee", user_id="dee"))
    post(client, {"paymentId": "pay_dee", "amount": "5", "userId": "dee"})
    post(client, {"paymentId": "pay_anon", "amount": "5"})
    assert client.get("/payments/pay_dee", headers=auth("member", "dee")).status_code == 200
    assert client.get("/payments/pay_anon", headers=auth("member", "dee")).status_code == 404
    assert client.get("/payments/pay_dee", headers=auth("member", "eve")).status_code == 404
    assert (
        client.post("/payments", json={"paymentId": "x", "amount": "1"}, headers=auth("member", "dee")).status_code
        == 403
    )
    assert client.get("/payments", headers=auth("member", "dee")).status_code == 403
    assert client.get("/payments/missing", headers=auth()).status_code == 404


def test_payments_are_listed_newest_first_by_status_and_time_with_a_cursor(
    client: TestClient, app: Application
) -> None:
    for n, amount in enumerate(["1.00", "1.51", "2.00", "3.00"]):
        post(client, {"paymentId": f"pay_{n}", "amount": amount})
    parts(app).worker.drain()
    page = client.get("/payments", params={"limit": 2}, headers=auth()).json()["data"]
    assert [p["paymentId"] for p in page["payments"]] == ["pay_3", "pay_2"]
    rest = client.get("/payments", params={"limit": 2, "cursor": page["nextCursor"]}, headers=auth()).json()["data"]
    assert [p["paymentId"] for p in rest["payments"]] == ["pay_1", "pay_0"] and rest["nextCursor"] is None
    failed = client.get("/payments", params={"status": "failed"}, headers=auth()).json()["data"]["payments"]
    assert [(p["paymentId"], p["failureReason"]) for p in failed] == [("pay_1", "card_declined")]
    now = datetime.now(UTC)
    window = {"from": (now - timedelta(hours=1)).isoformat(), "to": (now + timedelta(hours=1)).isoformat()}
    assert len(client.get("/payments", params=window, headers=auth()).json()["data"]["payments"]) == 4
    past = {"to": (now - timedelta(hours=1)).isoformat()}
    assert client.get("/payments", params=past, headers=auth()).json()["data"]["payments"] == []
    assert client.get("/payments", params={"status": "lost"}, headers=auth()).status_code == 400
    naive = client.get("/payments", params={"from": "2026-03-01T00:00:00"}, headers=auth())
    assert error(naive) == (400, "VALIDATION_ERROR", "from")


def test_a_payments_audit_trail_lists_who_did_what(client: TestClient, app: Application) -> None:
    post(client, {"paymentId": "pay_a", "amount": "1.52"}, Authorization=auth("service", "pos-7")["Authorization"])
    parts(app).worker.drain(until_idle_seconds=0.3)
    entries = client.get("/payments/pay_a/audit", headers=auth()).json()["data"]["entries"]
    assert [(e["actor"], e["action"]) for e in entries] == [
        ("pos-7", "payment.created"),
        ("system", "payment.processing"),
        ("system", "payment.attempt_failed"),
        ("system", "payment.attempt_failed"),
        ("system", "payment.processed"),
        ("system", "payment.notified"),
    ]
    assert entries[0]["details"] == {"amount": "1.52", "currency": "USD", "source": "api", "userId": None}
    assert all(later["prevHash"] for later in entries)
    assert client.get("/payments/pay_a/audit", headers=auth("member", "m")).status_code == 403


def upload(client: TestClient, body: str | bytes, **headers: str) -> Any:
    return client.post("/payments/batches", content=body, headers={**auth(), **CSV, **headers})


def test_an_uploaded_file_is_accepted_then_reported_and_the_same_file_again_creates_nothing(
    client: TestClient, app: Application
) -> None:
    body = "payment_id,amount,currency\n" + "".join(f"f_{n},1.00,USD\n" for n in range(150)) + "f_x,nope,USD\n"
    assert len(body) > app.settings.max_body_bytes  # more than a JSON body may carry
    accepted = upload(client, body)
    assert accepted.status_code == 202
    batch_id = accepted.json()["data"]["batchId"]
    assert accepted.json()["data"] == {"batchId": batch_id, "status": "processing", "created": True}
    parts(app).batch_worker.run_pending()
    report = client.get(f"/payments/batches/{batch_id}", headers=auth()).json()["data"]
    assert (report["status"], report["totalRows"], report["acceptedRows"], report["rejectedRows"]) == (
        "completed",
        151,
        150,
        1,
    )
    assert report["errors"] == [{"line": 152, "kind": "invalid", "reason": "amount: must be a decimal number"}]
    assert report["source"] == "api" and report["sizeBytes"] == len(body)
    again = upload(client, body)
    assert again.status_code == 200
    assert again.json()["data"] == {"batchId": batch_id, "status": "completed", "created": False}
    assert app.bus.query(lambda uow: uow.payments.count_by_status()) == {"pending": 150}


def test_a_batch_report_pages_through_its_rejected_and_duplicate_rows(client: TestClient) -> None:
    body = "payment_id,amount,currency\n" + "".join(f"g_{n},x,USD\n" for n in range(5)) + "g_ok,1,USD\ng_ok,1,USD\n"
    batch_id = upload(client, body).json()["data"]["batchId"]
    client.app.state.application.services["payments"].batch_worker.run_pending()  # type: ignore[attr-defined]
    url = f"/payments/batches/{batch_id}"
    first = client.get(url, params={"limit": 4}, headers=auth()).json()["data"]
    assert [e["line"] for e in first["errors"]] == [2, 3, 4, 5]
    second = client.get(url, params={"limit": 4, "cursor": first["nextCursor"]}, headers=auth()).json()["data"]
    assert [(e["line"], e["kind"]) for e in second["errors"]] == [(6, "invalid"), (8, "duplicate")]
    only = client.get(url, params={"kind": "duplicate"}, headers=auth()).json()["data"]["errors"]
    assert only == [{"line": 8, "kind": "duplicate", "reason": "payment_id: g_ok duplicates line 7"}]
    assert client.get("/payments/batches/" + "0" * 64, headers=auth()).status_code == 404
    assert client.get("/payments/batches/nothex", headers=auth()).status_code == 400


def test_an_upload_is_refused_when_it_is_not_csv_has_no_header_or_is_too_large(
    client: TestClient, app: Application
) -> None:
    assert error(upload(client, "payment_id,amount\n")) == (400, "VALIDATION_ERROR", "header")
    assert error(upload(client, b"")) == (400, "VALIDATION_ERROR", "body")
    wrong_type = client.post("/payments/batches", json={"a": 1}, headers=auth())
    assert wrong_type.status_code == 415 and wrong_type.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    huge = "payment_id,amount,currency\n" + "h,1.00,USD\n" * 3_000
    too_large = upload(client, huge)
    assert too_large.status_code == 413 and too_large.json()["error"]["details"]["limitBytes"] == 20_000

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while streaming
        yield b"payment_id,amount,currency\n"
        for _ in range(300):
            yield b"s,1.00,USD\n" * 10

    streamed = client.post("/payments/batches", content=chunks(), headers={**auth(), **CSV})
    assert streamed.status_code == 413
    assert app.bus.query(lambda uow: uow.connection.execute("SELECT COUNT(*) FROM payment_batches").fetchone()[0]) == 0
    assert list(app.settings.spool_dir.iterdir()) == []  # nothing left behind
    json_body = {"paymentId": "big", "amount": "1", "userId": "u" * 3000}
    assert client.post("/payments", json=json_body, headers=auth()).status_code == 413  # JSON keeps its limit
    member = client.post("/payments/batches", content="payment_id,amount,currency\n", headers=auth("member", "m") | CSV)
    assert member.status_code == 403
