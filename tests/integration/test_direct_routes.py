"""Routes called directly (``entrypoints/api/direct.py``) answer exactly as FastAPI's own
dependency solving does: the same status and the same bytes, for good and bad requests alike.

The comparison runs every request twice against the same kind of application: once as served, and
once with a dependency override set, which sends every request through FastAPI's solver.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from accrue.bootstrap import bootstrap
from accrue.entrypoints.api import direct
from accrue.entrypoints.api.app import create_app
from tests.conftest import auth, make_settings

JSON = {"Content-Type": "application/json"}


def _unused_dependency() -> None:  # pragma: no cover - only its presence matters
    return None


def serve(tmp_path: Path, *, fastapi_solver: bool) -> Iterator[TestClient]:
    application = bootstrap(make_settings(tmp_path, welcome_bonus_points=100))
    app = create_app(application)
    if fastapi_solver:
        app.dependency_overrides[_unused_dependency] = _unused_dependency
    with TestClient(app) as client:
        yield client
    application.close()


@pytest.fixture
def direct_client(tmp_path: Path) -> Iterator[TestClient]:
    yield from serve(tmp_path / "direct", fastapi_solver=False)


@pytest.fixture
def fastapi_client(tmp_path: Path) -> Iterator[TestClient]:
    yield from serve(tmp_path / "fastapi", fastapi_solver=True)


def _fixed(body: dict[str, Any]) -> dict[str, Any]:
    """The parts of an answer that differ between two runs by design (new ids, times)."""
    data = body.get("data")
    if isinstance(data, dict):
        for key in ("transactionId", "orderId", "createdAt", "referralCode"):
            if key in data:
                data[key] = "<varies>"
    return body


# (method, path, headers, body): requests good and bad for the routes that are called directly.
CASES: list[tuple[str, str, dict[str, str], bytes | None]] = [
    ("POST", "/users", {**auth(), **JSON}, b'{"email":"a@example.com","name":"A","userId":"u-a"}'),
    ("POST", "/users", {**auth(), **JSON}, b'{"email":"a@example.com","name":"A again"}'),  # 409
    ("POST", "/users", {**auth(), **JSON}, b'{"email":"not-an-email","name":"B"}'),
    ("POST", "/users", {**auth(), **JSON}, b'{"email":"b@example.com"}'),  # name missing
    ("POST", "/users", {**auth(), **JSON}, b""),  # no body at all
    ("POST", "/users", {**auth(), **JSON}, b'{"email": "b@example.com", '),  # broken JSON
    ("POST", "/users", {**auth(), **JSON}, b"[1, 2]"),
    ("POST", "/users", {**auth(), **JSON}, b"\x1bR\xdb\x9f.!\xff\xfe"),  # not UTF-8: 400, found by schemathesis
    ("POST", "/users", auth(), b'{"email":"c@example.com","name":"C"}'),  # no content type
    ("POST", "/users", {**auth(), "Content-Type": "text/plain"}, b'{"email":"c@example.com","name":"C"}'),
    ("POST", "/users", {**auth(), "Content-Type": "application/merge-patch+json"}, b'{"email":"d@example.com"}'),
    ("POST", "/users", JSON, b'{"email":"e@example.com","name":"E"}'),  # no token: 401 before 400
    ("POST", "/users", {**auth("member", "u-a"), **JSON}, b"{}"),  # wrong role: 403 before 400
    (
        "POST",
        "/transactions",
        {**auth(), **JSON},
        b'{"memberId":"u-a","transactionAmount":"12000.00","transactionType":"purchase"}',
    ),
    (
        "POST",
        "/transactions",
        {**auth(), **JSON},
        b'{"memberId":"u-a","transactionAmount":"-5","transactionType":"purchase"}',
    ),
    (
        "POST",
        "/transactions",
        {**auth(), **JSON},
        b'{"memberId":"u-a","transactionAmount":1.5e400,"transactionType":"purchase"}',
    ),
    ("POST", "/transactions", {**auth(), **JSON}, b'{"memberId":"","transactionAmount":"1"}'),
    ("POST", "/orders", {**auth(), **JSON}, b'{"userId":"nobody","amount":"10.00","currency":"USD","items":[]}'),
    (
        "POST",
        "/orders",
        {**auth(), **JSON},
        b'{"userId":"u-a","amount":"10.00","currency":"USD","items":[{"sku":"s","quantity":0,"price":"1.00"}]}',
    ),
    ("POST", "/points/u-a/redeem", {**auth(), **JSON}, b'{"points":500,"reason":"voucher"}'),
    ("POST", "/points/u-a/redeem", {**auth(), **JSON}, b'{"points":999999}'),  # 409, nothing written
    ("POST", "/points/u-a/redeem", {**auth(), **JSON}, b'{"points":0}'),
    ("POST", "/points/u-a/redeem", {**auth("member", "someone-else"), **JSON}, b'{"points":1}'),  # 404
    ("POST", "/points/bad id!/redeem", {**auth(), **JSON}, b'{"points":1}'),  # path rule and body
    ("GET", "/users/u-a", auth(), None),
    ("GET", "/users/u-a", auth("member", "someone-else"), None),
    ("GET", "/points/u-a", auth(), None),
]


def test_every_case_answers_the_same_directly_and_through_fastapis_solver(
    direct_client: TestClient, fastapi_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"direct": 0}
    original = direct.request_body_to_args

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls["direct"] += 1
        return await original(*args, **kwargs)

    monkeypatch.setattr(direct, "request_body_to_args", counted)
    for method, path, headers, body in CASES:
        ours = direct_client.request(method, path, headers=headers, content=body)
        before = calls["direct"]
        theirs = fastapi_client.request(method, path, headers=headers, content=body)
        assert calls["direct"] == before, "with an override set, FastAPI must solve every request"
        label = f"{method} {path} {body!r}"
        assert ours.status_code == theirs.status_code, label
        assert _fixed(ours.json()) == _fixed(theirs.json()), label
        assert ours.headers.get("content-type") == theirs.headers.get("content-type"), label
    # The served application really took the direct path (the other one never does).
    assert calls["direct"] > 0


def test_the_write_routes_are_called_directly_and_health_is_left_to_fastapi() -> None:
    from accrue.entrypoints.api.routers import loyalty, system

    planned = {(sorted(r.methods)[0], r.path): direct._plan(r) is not None for r in loyalty.api.routes}  # type: ignore[attr-defined]
    assert planned[("POST", "/transactions")]
    assert planned[("POST", "/users")]
    assert planned[("POST", "/orders")]
    assert planned[("POST", "/points/{userId}/redeem")]
    # GET /health returns a dict that FastAPI validates and encodes: unchanged, it is the baseline.
    health = next(r for r in system.api.routes if r.path == "/health")  # type: ignore[attr-defined]
    assert direct._plan(health) is None


def test_every_module_route_is_declared_on_the_application_itself_once(tmp_path: Path) -> None:
    """Routes are added to the application's router (``add_routes``), not included behind a branch
    that FastAPI matches twice per request; each keeps its route class, responses and name."""
    from fastapi.routing import APIRoute

    from accrue.entrypoints.api.app import ROUTERS
    from accrue.entrypoints.api.idempotency import IdempotentRoute

    application = bootstrap(make_settings(tmp_path))
    try:
        app = create_app(application)
        served = [r for r in app.router.routes if isinstance(r, APIRoute)]
        documentation = {app.openapi_url, app.docs_url, app.swagger_ui_oauth2_redirect_url, app.redoc_url}
        assert all(isinstance(r, APIRoute) or getattr(r, "path", None) in documentation for r in app.router.routes)
        declared = [r for module in ROUTERS for r in module.api.routes if isinstance(r, APIRoute)]
        assert [(r.path, sorted(r.methods), r.name) for r in served] == [
            (r.path, sorted(r.methods), r.name) for r in declared
        ]
        assert all(type(r) is type(d) and r.responses == d.responses for r, d in zip(served, declared, strict=True))
        assert sum(type(r) is IdempotentRoute for r in served) > len(served) // 2
        assert all(r.dependency_overrides_provider is app for r in served)
    finally:
        application.close()
