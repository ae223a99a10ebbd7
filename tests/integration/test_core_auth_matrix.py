"""Every operation x {no token, bad token, admin, service, member own, member other} answers the status
documented in the auth matrix of docs/API.md (the test reads that table, so docs and code agree)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from accrue.bootstrap import Application
from accrue.entrypoints.api.app import create_app
from accrue.entrypoints.api.security import issue_token
from tests.conftest import token

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

    path: str
    body: Callable[[], dict[str, Any]] | None = None
    params: dict[str, str] | None = None


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
}


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


@pytest.fixture
def matrix_client(app: Application) -> TestClient:
    seed(app)
    return TestClient(create_app(app))


CELLS = [(operation, caller) for operation in MATRIX for caller in CALLERS]


@pytest.mark.parametrize(("operation", "caller"), CELLS, ids=[f"{o} as {c}" for o, c in CELLS])
def test_each_operation_gives_each_caller_the_documented_status(
    matrix_client: TestClient, operation: str, caller: str
) -> None:
    expected = MATRIX[operation][caller]
    example = EXAMPLES.get(operation)
    if example is None:
        if expected not in (401, 403):
            pytest.skip(f"no example request for {operation} in this file; its 401 and 403 cells are checked")
        example = generic_request(operation)
    method = operation.split(" ", 1)[0]
    response = matrix_client.request(
        method,
        example.path,
        params=example.params,
        json=example.body() if example.body else None,
        headers=headers_for(caller),
    )
    assert response.status_code == expected, response.text
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


def test_every_core_operation_has_an_example_so_every_cell_is_exercised() -> None:
    core = {op for op in MATRIX if op in EXAMPLES}
    assert core == set(EXAMPLES)
