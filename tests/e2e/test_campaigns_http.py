"""Issue 5, acceptance 1: campaigns over HTTP against a real server process."""

from __future__ import annotations

import sqlite3
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.cli_support import ledger_check as cli_ledger_check
from tests.conftest import LiveServer

pytestmark = pytest.mark.slow


def ledger_check(server: LiveServer) -> subprocess.CompletedProcess[str]:
    return cli_ledger_check(server.db, server.env)


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def test_2x_electronics_and_spend_100_get_50_give_80_points_for_150_and_9_for_90(live_server: LiveServer) -> None:
    with live_server.client() as api:
        created(
            api.post(
                "/campaigns",
                json={
                    "name": "Black Friday 2X Points",
                    "type": "purchase_multiplier",
                    "multiplier": 2,
                    "conditions": {"minAmount": 100, "categories": ["electronics", "clothing"]},
                    "startDate": "2025-11-24T00:00:00Z",
                    "endDate": "2999-11-26T23:59:59Z",
                },
            )
        )
        created(
            api.post(
                "/campaigns",
                json={
                    "name": "Spend $100, get 50",
                    "type": "fixed_bonus",
                    "points": 50,
                    "conditions": {"minAmount": 100},
                },
            )
        )
        user = created(api.post("/users", json={"email": "shopper@example.com", "name": "Shopper"}))
        assert user["points"] == 100

        def buy(amount: str) -> dict[str, Any]:
            return created(
                api.post(
                    "/orders",
                    json={
                        "userId": user["userId"],
                        "amount": amount,
                        "items": [{"sku": "tv-1", "quantity": 1, "price": amount, "category": "Electronics"}],
                    },
                )
            )

        assert buy("150.00")["pointsEarned"] == 15 * 2 + 50
        assert buy("90.00")["pointsEarned"] == 9
        balance = api.get(f"/points/{user['userId']}").json()["data"]
        assert (balance["balance"], balance["lifetime"]) == (100 + 80 + 9, 80 + 9)
    assert ledger_check(live_server).returncode == 0


def test_a_1000_point_budget_hit_by_40_concurrent_orders_awards_exactly_1000(live_server: LiveServer) -> None:
    with live_server.client() as api:
        campaign_id = created(
            api.post(
                "/campaigns",
                json={
                    "name": "Limited: 30 points an order",
                    "type": "fixed_bonus",
                    "points": 30,
                    "budget": {"totalPoints": 1000},
                },
            )
        )["campaignId"]
        members = [
            created(api.post("/users", json={"email": f"buyer{i}@example.com", "name": f"B{i}"}))["userId"]
            for i in range(8)
        ]

    def place(n: int) -> int:
        # One connection per request: 40 truly concurrent requests against the server.
        with live_server.client() as client:
            body = {"userId": members[n % len(members)], "amount": "20.00"}
            response = client.post("/orders", json=body, headers={"Idempotency-Key": f"order-{n}"})
            earned: int = created(response)["pointsEarned"]
            return earned - 2  # minus the base points of a $20 purchase

    with ThreadPoolExecutor(max_workers=40) as pool:
        bonuses = list(pool.map(place, range(40)))

    assert sum(bonuses) == 1000  # demand was 40 x 30 = 1200: exactly the budget, never more
    assert sorted(bonuses, reverse=True)[:34] == [30] * 33 + [10]
    with live_server.client() as api:
        view = api.get(f"/campaigns/{campaign_id}").json()["data"]
    assert (view["pointsAwarded"], view["budgetRemaining"]) == (1000, 0)
    with sqlite3.connect(f"file:{live_server.db}?mode=ro", uri=True) as conn:
        drawn = conn.execute(
            "SELECT COALESCE(SUM(amount), 0), COUNT(*) FROM transfers WHERE debit_account = ?",
            (f"campaign:{campaign_id}:budget",),
        ).fetchone()
    assert drawn == (1000, 34)
    check = ledger_check(live_server)
    assert check.returncode == 0, check.stdout + check.stderr
