"""The loyalty core over HTTP against a real server process: enrolment to notifications, concurrent
purchases for one member, and idempotency keys under concurrency."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.cli_support import ledger_check as cli_ledger_check
from tests.conftest import LiveServer, auth, wait_for

pytestmark = pytest.mark.slow


def ledger_check(server: LiveServer) -> subprocess.CompletedProcess[str]:
    """`accrue ledger check` as an operator runs it: a separate process on the server's database file."""
    return cli_ledger_check(server.db, server.env)


def outbox_pending(server: LiveServer) -> int:
    with sqlite3.connect(f"file:{server.db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM outbox WHERE status != 'done'").fetchone()[0])


def test_a_purchase_of_12000_makes_a_new_member_silver_with_one_milestone_and_one_upgrade_notice(
    live_server: LiveServer,
) -> None:
    with live_server.client() as api:
        created = api.post("/users", json={"email": "Ann@Example.com", "name": "Ann"})
        assert created.status_code == 201, created.text
        user = created.json()["data"]
        user_id = user["userId"]
        assert user["points"] == 100  # the welcome bonus: spendable, not qualifying
        assert user["tier"] == "BRONZE"

        purchase = api.post(
            "/transactions",
            json={"memberId": user_id, "transactionAmount": "12000.00", "transactionType": "purchase"},
        )
        assert purchase.status_code == 200, purchase.text
        result = purchase.json()
        assert result["success"] is True
        assert result["data"]["pointsEarned"] == 1200
        assert result["data"]["totalPoints"] == 1300
        assert result["data"]["tier"] == "SILVER"

        points = api.get(f"/points/{user_id}").json()["data"]
        assert points == {"userId": user_id, "balance": 1300, "lifetime": 1200, "tier": "SILVER"}

        def both_notifications() -> list[dict[str, Any]] | None:
            found: list[dict[str, Any]] = api.get("/notifications", params={"userId": user_id}).json()["data"][
                "notifications"
            ]
            return found if len(found) >= 2 else None

        wait_for(both_notifications)
        # Count only once the outbox is fully drained, so a late duplicate would be seen.
        wait_for(lambda: outbox_pending(live_server) == 0)
        notifications = api.get("/notifications", params={"userId": user_id}).json()["data"]["notifications"]

    by_type: dict[str, list[dict[str, Any]]] = {}
    for item in notifications:
        by_type.setdefault(item["type"], []).append(item)
    assert sorted(by_type) == ["milestone", "tier_upgrade"]
    assert len(by_type["milestone"]) == 1
    assert len(by_type["tier_upgrade"]) == 1

    milestone = by_type["milestone"][0]
    assert milestone["milestones"] == [100, 500]
    assert set(milestone["message"]) == {"default", "email", "sms"}
    assert all(text.strip() for text in milestone["message"].values())
    assert "100, 500" in milestone["message"]["default"]
    assert "100, 500" in milestone["message"]["email"]
    assert "500" in milestone["message"]["sms"]
    assert len(milestone["message"]["sms"]) <= 160

    upgrade = by_type["tier_upgrade"][0]
    assert (upgrade["oldTier"], upgrade["newTier"]) == ("BRONZE", "SILVER")
    assert set(upgrade["message"]) == {"default", "email", "sms"}
    assert "SILVER" in upgrade["message"]["default"]
    assert "SILVER" in upgrade["message"]["sms"]
    assert len(upgrade["message"]["sms"]) <= 160
    email = upgrade["message"]["email"]
    assert "BRONZE" in email and "SILVER" in email
    assert "5% bonus points on all purchases" in email  # the new tier's benefits are listed
    for item in notifications:
        assert item["userId"] == user_id
        assert item["subject"]
        assert item["createdAt"]


def test_32_threads_posting_50_purchases_for_one_member_lose_no_update_and_keep_the_ledger_balanced(
    live_server: LiveServer,
) -> None:
    threads, per_thread = 32, 50
    member_id = "pos-member-1"
    earned: list[int] = []
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker(index: int) -> None:
        mine: list[int] = []
        with httpx.Client(base_url=live_server.url, headers=auth("service", "pos-1"), timeout=60) as api:
            start.wait()
            for n in range(per_thread):
                # Amounts vary so that base points and tier bonuses differ between requests.
                amount = f"{100 + (index * per_thread + n) % 37}.{n % 100:02d}"
                response = api.post(
                    "/transactions",
                    json={"memberId": member_id, "transactionAmount": amount, "transactionType": "purchase"},
                )
                if response.status_code != 200:
                    with lock:
                        failures.append(f"{response.status_code} {response.text}")
                    continue
                mine.append(response.json()["data"]["pointsEarned"])
        with lock:
            earned.extend(mine)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(worker, range(threads)))

    assert failures == []
    assert len(earned) == threads * per_thread
    with live_server.client() as api:
        points = api.get(f"/points/{member_id}").json()["data"]
        history: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 100}
            if cursor:
                params["cursor"] = cursor
            page = api.get(f"/points/{member_id}/history", params=params).json()["data"]
            history.extend(page["history"])
            cursor = page["nextCursor"]
            if cursor is None:
                break
    # An unknown member is enrolled by its first transaction, without a welcome bonus.
    assert points["balance"] == sum(earned)
    assert points["lifetime"] == sum(earned)
    assert points["tier"] == "PLATINUM"
    # Every purchase posted its base points once; those made at SILVER or above also a tier bonus.
    assert sum(1 for entry in history if entry["reason"] == "earn") == threads * per_thread
    assert sum(entry["points"] for entry in history) == sum(earned)
    # Newest first, each entry carrying the balance it left: a gap-free chain.
    balances = [entry["balance"] for entry in reversed(history)]
    steps = [entry["points"] for entry in reversed(history)]
    assert balances == [sum(steps[: i + 1]) for i in range(len(steps))]

    check = ledger_check(live_server)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "ledger OK" in check.stdout


def concurrently(count: int, call: Callable[[], httpx.Response]) -> list[httpx.Response]:
    start = threading.Barrier(count)

    def run(_: int) -> httpx.Response:
        start.wait()
        return call()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def test_twenty_concurrent_requests_with_one_idempotency_key_apply_once_and_replay_the_same_body(
    live_server: LiveServer,
) -> None:
    body = {"memberId": "idem-member", "transactionAmount": "250.00", "transactionType": "purchase"}
    headers = {**auth("service", "pos-7"), "Idempotency-Key": "checkout-2026-0001"}

    def post(json_body: dict[str, Any] = body) -> httpx.Response:
        return httpx.post(f"{live_server.url}/transactions", json=json_body, headers=headers, timeout=60)

    responses = concurrently(20, post)

    succeeded = [r for r in responses if r.status_code == 200]
    in_flight = [r for r in responses if r.status_code != 200]
    assert succeeded, [r.text for r in responses]
    # Requests that overlapped the first one are told to retry; none applied anything.
    assert all(r.status_code == 409 for r in in_flight), [r.text for r in in_flight]
    assert all(r.json()["error"]["details"] == {"field": "Idempotency-Key"} for r in in_flight)
    # Requests that came after it are replays of its response, byte for byte.
    assert len({r.content for r in succeeded}) == 1
    first = succeeded[0]
    assert first.json()["data"]["pointsEarned"] == 25

    replay = post()
    assert replay.status_code == 200
    assert replay.content == first.content
    assert replay.headers["Idempotent-Replayed"] == "true"

    other = post({**body, "transactionAmount": "999.00"})
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "IDEMPOTENCY_MISMATCH"

    with live_server.client() as api:
        points = api.get("/points/idem-member").json()["data"]
        history = api.get("/points/idem-member/history").json()["data"]["history"]
    assert points["balance"] == 25
    assert [entry["transactionId"] for entry in history] == [first.json()["data"]["transactionId"]]

    # The key belongs to its subject: another client using the same key string is independent.
    elsewhere = httpx.post(
        f"{live_server.url}/transactions",
        json=body,
        headers={**auth("service", "pos-8"), "Idempotency-Key": "checkout-2026-0001"},
        timeout=60,
    )
    assert elsewhere.status_code == 200
    assert elsewhere.json()["data"]["transactionId"] != first.json()["data"]["transactionId"]
