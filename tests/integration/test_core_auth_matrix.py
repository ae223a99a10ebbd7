"""Every operation x {no token, bad token, admin, service, member own, member other} answers the status
documented in the auth matrix of docs/API.md (the test reads that table, so docs and code agree)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from accrue.bootstrap import Application, bootstrap
from accrue.entrypoints.api.app import create_app
from accrue.entrypoints.api.security import issue_token
from tests.conftest import make_settings, token

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "API.md"
CALLERS = ("no token", "bad token", "admin", "service", "member, own", "member, other")
OWNER = "matrix-owner"
OTHER = "matrix-other"


def documented_matrix() -> dict[str, dict[str, int]]:
    text = API_DOC.read_text(encoding="utf-8")
    block = text.split("<!-- auth-matrix:start -->", 1)[1].split("<!-- auth-matrix:end -->", 1)[0]
    rows = [line for line in block.strip().splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert tuple(header[1:]) == CALLERS, header
    matrix: dict[str, dict[str, int]] = {}
    for line in rows[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        operation = cells[0].strip("`")
        matrix[operation] = dict(zip(CALLERS, (int(c) for c in cells[1:]), strict=True))
    return matrix


MATRIX = documented_matrix()


def headers_for(caller: str) -> dict[str, str]:
    if caller == "no token":
        return {}
    if caller == "bad token":
        forged = issue_token("another-secret-entirely-0123456789abcdef", sub="admin", role="admin")
        return {"Authorization": f"Bearer {forged}"}
    role, sub = {
        "admin": ("admin", "ops"),
        "service": ("service", "pos-1"),
        "member, own": ("member", OWNER),
        "member, other": ("member", OTHER),
    }[caller]
    return {"Authorization": f"Bearer {token(role, sub)}"}


@dataclass(frozen=True)
class Example:
    """An otherwise valid request: a fresh body per call, and the userId the caller asks about."""

    path: str | Callable[[], str]
    body: Callable[[], dict[str, Any]] | None = None
    params: dict[str, str] | None = None
    # A body that is not JSON (a CSV upload), with its content type.
    content: tuple[bytes, str] | None = None


_counter = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_counter)}"


# A valid request for each core operation. Paths name the owner's data; "member, other" is a member
# whose sub is another (existing) member asking for the owner's data.
EXAMPLES: dict[str, Example] = {
    "GET /health": Example("/health"),
    "POST /users": Example("/users", lambda: {"email": f"{unique('m')}@example.com", "name": "M"}),
    "GET /users/{userId}": Example(f"/users/{OWNER}"),
    "POST /transactions": Example(
        "/transactions",
        lambda: {"memberId": OWNER, "transactionAmount": "10.00", "transactionType": "purchase"},
    ),
    "POST /orders": Example("/orders", lambda: {"userId": OWNER, "amount": "10.00", "currency": "USD"}),
    "GET /orders": Example("/orders", params={"userId": OWNER}),
    "GET /points/{userId}": Example(f"/points/{OWNER}"),
    "GET /points/{userId}/history": Example(f"/points/{OWNER}/history"),
    "POST /points/{userId}/redeem": Example(f"/points/{OWNER}/redeem", lambda: {"points": 1}),
    "GET /notifications": Example("/notifications", params={"userId": OWNER}),
    "GET /admin/dead-letters": Example("/admin/dead-letters"),
    "POST /admin/dead-letters/{id}/redrive": Example("/admin/dead-letters/outbox:1/redrive", lambda: {}),
    # The other features' operations, with data seeded through the API (see seed_over_http).
    "POST /signup": Example("/signup", lambda: {"userId": unique("referred"), "referralCode": SEEDED["code"]}),
    "GET /referrals/{referrerId}": Example(f"/referrals/{OWNER}"),
    "GET /referrals/rewards/held": Example("/referrals/rewards/held"),
    "POST /payouts/run": Example("/payouts/run", lambda: {"month": "2026-09"}),
    "GET /payouts": Example("/payouts"),
    "GET /payouts/{month}": Example("/payouts/2026-10"),
    "GET /payouts/{month}/report": Example("/payouts/2026-10/report"),
    "POST /payments": Example("/payments", lambda: {"paymentId": unique("pay"), "amount": "10.00", "currency": "USD"}),
    "GET /payments": Example("/payments"),
    "GET /payments/{paymentId}": Example("/payments/matrix-pay"),
    "GET /payments/{paymentId}/audit": Example("/payments/matrix-pay/audit"),
    "POST /payments/batches": Example(
        "/payments/batches", content=(b"payment_id,amount,currency\nmatrix-batch-2,5.00,USD\n", "text/csv")
    ),
    "GET /payments/batches/{batchId}": Example(lambda: f"/payments/batches/{SEEDED['batch']}"),
    "POST /campaigns": Example("/campaigns", lambda: {"name": unique("campaign"), "type": "fixed_bonus", "points": 5}),
    "GET /campaigns": Example("/campaigns"),
    "PATCH /campaigns/{campaignId}": Example(lambda: f"/campaigns/{SEEDED['campaign']}", lambda: {"status": "ended"}),
    "POST /webhook-endpoints": Example(
        "/webhook-endpoints", lambda: {"url": "http://127.0.0.1:9/other", "events": ["tier.upgraded"]}
    ),
    "GET /campaigns/{campaignId}": Example(lambda: f"/campaigns/{SEEDED['campaign']}"),
    "GET /webhook-endpoints": Example("/webhook-endpoints"),
    "GET /webhook-endpoints/{id}/deliveries": Example(lambda: f"/webhook-endpoints/{SEEDED['endpoint']}/deliveries"),
    "GET /users/{userId}/preferences": Example(f"/users/{OWNER}/preferences"),
    "PUT /users/{userId}/preferences": Example(
        f"/users/{OWNER}/preferences", lambda: {"email": True, "sms": False, "push": True}
    ),
    "GET /users/{userId}/export": Example(f"/users/{OWNER}/export"),
    "DELETE /users/{userId}": Example(f"/users/{OWNER}"),
}
SEEDED: dict[str, str] = {}


def generic_request(operation: str) -> Example:
    """For 401/403 cells of operations without an example: auth is decided before input is read."""
    _, path = operation.split(" ", 1)
    return Example(re.sub(r"\{[^}]+\}", OWNER, path), (lambda: {}) if operation.startswith("POST") else None)


def seed(app: Application) -> None:
    """The owner and the other member, with points to redeem, and one dead letter to redrive."""
    from accrue.service_layer.handlers import enrol

    now = datetime.now(UTC)
    with app.bus.uow_factory() as uow:
        for user_id in (OWNER, OTHER):
            enrol(
                uow,
                user_id=user_id,
                email=f"{user_id}@example.com",
                name=user_id,
                phone=None,
                now=now,
                welcome_bonus_points=100,
            )
        uow.outbox.add("evt_matrix", "TierUpgraded", "notify_tier_upgraded", "{}", now)
        uow.commit()
    with app.bus.uow_factory() as uow:
        (message,) = uow.outbox.claim_due(now, 10, 60)
        uow.outbox.mark_failed(message.message_id, "RuntimeError: kept failing", None)
        uow.commit()


def seed_over_http(client: TestClient) -> None:
    """Data the other features' operations need, made the way a client would make it."""
    admin = headers_for("admin")

    def post(path: str, **kwargs: Any) -> dict[str, Any]:
        response = client.post(path, headers={**admin, **kwargs.pop("headers", {})}, **kwargs)
        assert response.status_code < 300, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    SEEDED.clear()
    SEEDED["code"] = client.get(f"/users/{OWNER}", headers=admin).json()["data"]["referralCode"]
    post("/payments", json={"paymentId": "matrix-pay", "amount": "10.00", "currency": "USD", "userId": OWNER})
    SEEDED["batch"] = post(
        "/payments/batches",
        content=b"payment_id,amount,currency\nmatrix-batch-1,5.00,USD\n",
        headers={"Content-Type": "text/csv"},
    )["batchId"]
    SEEDED["campaign"] = post("/campaigns", json={"name": "Matrix", "type": "fixed_bonus", "points": 10})["campaignId"]
    SEEDED["endpoint"] = post(
        "/webhook-endpoints", json={"url": "http://127.0.0.1:9/accrue", "events": ["points.earned"]}
    )["id"]
    post("/payouts/run", json={"month": "2026-10"})


@pytest.fixture
def matrix_client(tmp_path: Path) -> Iterator[TestClient]:
    # Webhook endpoints must resolve to a public address unless loopback is allowed (tests only).
    app = bootstrap(make_settings(tmp_path, webhooks_allow_loopback=True))
    seed(app)
    client = TestClient(create_app(app))
    seed_over_http(client)
    yield client
    app.close()


# Operations whose success cells need what a bearer token cannot give here: a reward held by the
# velocity rule, or a provider's signature instead of a JWT. The named tests prove those cells over
# a real server; this file checks their 401/403 cells.
SUCCESS_PROVED_ELSEWHERE = {
    "POST /referrals/rewards/{id}/approve": (
        "tests/e2e/test_referral_api.py::test_held_rewards_are_reviewed_by_an_admin_over_http"
    ),
    "POST /referrals/rewards/{id}/reject": (
        "tests/e2e/test_referral_api.py::test_held_rewards_are_reviewed_by_an_admin_over_http"
    ),
    "POST /webhooks/{provider}": "tests/e2e/test_webhooks_e2e.py",
}


def _checked_here(operation: str, caller: str) -> bool:
    return operation in EXAMPLES or MATRIX[operation][caller] in (401, 403)


CELLS = [(operation, caller) for operation in MATRIX for caller in CALLERS if _checked_here(operation, caller)]


def test_every_cell_not_checked_here_names_the_test_that_proves_it() -> None:
    unchecked = {operation for operation in MATRIX for caller in CALLERS if not _checked_here(operation, caller)}
    assert unchecked == set(SUCCESS_PROVED_ELSEWHERE)
    root = Path(__file__).resolve().parents[2]
    for operation, where in SUCCESS_PROVED_ELSEWHERE.items():
        path, _, test_name = where.partition("::")
        source = (root / path).read_text()
        assert not test_name or f"def {test_name}(" in source, where
        route_start = operation.split(" ", 1)[1].split("{", 1)[0]
        assert route_start in source, f"{where} does not call {operation}"


@pytest.mark.parametrize(("operation", "caller"), CELLS, ids=[f"{o} as {c}" for o, c in CELLS])
def test_each_operation_gives_each_caller_the_documented_status(
    matrix_client: TestClient, operation: str, caller: str
) -> None:
    expected = MATRIX[operation][caller]
    example = EXAMPLES.get(operation)
    if example is None:
        example = generic_request(operation)
    method = operation.split(" ", 1)[0]
    headers = headers_for(caller)
    content = None
    if example.content is not None:
        content, headers["Content-Type"] = example.content
    response = matrix_client.request(
        method,
        example.path if isinstance(example.path, str) else example.path(),
        params=example.params,
        json=example.body() if example.body else None,
        content=content,
        headers=headers,
    )
    assert response.status_code == expected, response.text
    if expected < 400 and not response.headers["content-type"].startswith("application/json"):
        return  # a file (the payout report as CSV), not an envelope
    body = response.json()
    assert body["success"] is (expected < 400)
    if expected == 401:
        assert body["error"]["code"] == "UNAUTHORIZED"
        assert response.headers["WWW-Authenticate"] == "Bearer"
    if expected == 403:
        assert body["error"]["code"] == "FORBIDDEN"


def test_every_operation_of_the_api_is_in_the_documented_matrix(app: Application) -> None:
    document = create_app(app).openapi()
    operations = {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item}
    assert sorted(operations - set(MATRIX)) == [], "add these operations to the auth matrix in docs/API.md"
    assert sorted(set(MATRIX) - operations) == [], "the auth matrix in docs/API.md lists operations that do not exist"


CORE_OPERATIONS = {
    "GET /health",
    "POST /users",
    "GET /users/{userId}",
    "POST /transactions",
    "POST /orders",
    "GET /orders",
    "GET /points/{userId}",
    "GET /points/{userId}/history",
    "POST /points/{userId}/redeem",
    "GET /notifications",
    "GET /admin/dead-letters",
    "POST /admin/dead-letters/{id}/redrive",
}


def test_every_core_operation_has_an_example_and_every_example_is_a_documented_operation() -> None:
    assert sorted(CORE_OPERATIONS - set(EXAMPLES)) == []
    assert sorted(set(EXAMPLES) - set(MATRIX)) == []
