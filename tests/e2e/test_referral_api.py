"""Referrals and payouts end to end, over HTTP against a real server process."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from accrue.domain.payouts import Month
from accrue.domain.referrals import reward_cents_for
from tests.conftest import LiveServer, auth, wait_for

pytestmark = pytest.mark.slow


def enrol(client: httpx.Client, user_id: str, email: str) -> dict[str, Any]:
    response = client.post("/users", json={"userId": user_id, "email": email, "name": user_id})
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def signup(client: httpx.Client, **body: str) -> httpx.Response:
    return client.post("/signup", json=body)


def error(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    return dict(body["error"])


def test_twenty_six_signups_earn_the_stepped_rewards_and_every_refusal_rule_holds(live_server: LiveServer) -> None:
    with live_server.client() as client:
        referrer = enrol(client, "ref-1", "Jane.Doe+loyalty@gmail.com")
        code = referrer["referralCode"]
        assert len(code) == 8 and not set(code) & set("01OI")

        amounts = []
        for n in range(1, 27):
            response = signup(client, userId=f"friend-{n}", referralCode=code, email=f"friend{n}@example.com")
            assert response.status_code == 201, response.text
            data = response.json()["data"]
            assert (data["referralCount"], data["rewardStatus"], data["referrerId"]) == (n, "pending", "ref-1")
            amounts.append(data["rewardAmount"])
        assert Counter(amounts) == {"10.00": 4, "15.00": 5, "20.00": 15, "25.00": 2}

        view = client.get("/referrals/ref-1", params={"limit": 100}).json()["data"]
        assert (view["referralCount"], view["totalRewards"], view["pendingRewards"]) == (26, "465.00", "465.00")
        assert len(view["referrals"]) == 26

        def referral_notifications() -> list[dict[str, Any]]:
            page = client.get("/notifications", params={"userId": "ref-1", "limit": 100}).json()["data"]
            return [n for n in page["notifications"] if n["type"] == "referral_signup"]

        wait_for(lambda: len(referral_notifications()) == 26)
        assert len(referral_notifications()) == 26

        # Refusals: status, the field named, and no change to the counters.
        unknown = signup(client, userId="new-x", referralCode="ZZZZ2222")
        assert (unknown.status_code, error(unknown)["details"]["field"]) == (404, "referralCode")
        existing = signup(client, userId="friend-3", referralCode=code)
        assert (existing.status_code, error(existing)["details"]["field"]) == (409, "userId")
        own_code = signup(client, userId="ref-1", referralCode=code)
        assert (own_code.status_code, error(own_code)["details"]["rule"]) == (422, "self-referral")
        for alias in ("jane.doe+loyalty@gmail.com", "JANEDOE@gmail.com", "jane.doe+other@googlemail.com"):
            same = signup(client, userId="new-y", referralCode=code, email=alias)
            assert (same.status_code, error(same)["details"]) == (422, {"field": "email", "rule": "self-referral"})
        for taken in ("FRIEND7@example.com", "friend7+again@example.com"):
            used = signup(client, userId="new-z", referralCode=code, email=taken)
            assert (used.status_code, error(used)["details"]) == (422, {"field": "email", "rule": "already used"})
        malformed = signup(client, userId="new-w", referralCode="not a code!")
        assert malformed.status_code == 400 and error(malformed)["details"]["errors"][0]["field"] == "referralCode"

        view = client.get("/referrals/ref-1").json()["data"]
        assert (view["referralCount"], view["totalRewards"]) == (26, "465.00")
        for refused in ("new-x", "new-y", "new-z", "new-w"):
            assert client.get(f"/users/{refused}").status_code == 404


def test_the_payout_run_pays_four_hundred_sixty_five_dollars_once_and_serves_the_report(
    live_server: LiveServer,
) -> None:
    month = str(Month.of(datetime.now(UTC)))
    with live_server.client() as client:
        referrer = enrol(client, "ref-1", "payee@example.com")
        for n in range(26):
            assert signup(client, userId=f"friend-{n}", referralCode=referrer["referralCode"]).status_code == 201

        first = client.post("/payouts/run", json={"month": month})
        assert first.status_code == 200, first.text
        run = first.json()["data"]
        assert (run["status"], run["referrers"], run["rewards"], run["totalAmount"]) == ("completed", 1, 26, "465.00")
        assert run["reportKey"] == f"payouts/{month}/payout-report-{month}.csv"

        report = client.get(f"/payouts/{month}/report")
        assert report.status_code == 200
        assert report.headers["content-type"].startswith("text/csv")
        assert report.text == "Referrer ID,Total Amount,Referral Count,Payment Status\nref-1,465.00,26,Processed\n"

        view = client.get("/referrals/ref-1", params={"limit": 100}).json()["data"]
        assert (view["paidRewards"], view["pendingRewards"], view["totalRewards"]) == ("465.00", "0.00", "465.00")
        assert {r["status"] for r in view["referrals"]} == {"paid"}
        assert {r["payoutRunId"] for r in view["referrals"]} == {f"payout-{month}"}

        second = client.post("/payouts/run", json={"month": month})
        assert second.json()["data"] == run
        assert client.get("/referrals/ref-1", params={"limit": 100}).json()["data"] == view
        assert client.get(f"/payouts/{month}").json()["data"] == run
        assert [r["month"] for r in client.get("/payouts").json()["data"]["runs"]] == [month]

        def operator_notifications() -> list[dict[str, Any]]:
            page = client.get("/notifications", params={"userId": "system:operations"}).json()["data"]
            return [n for n in page["notifications"] if n["type"] == "payout_completed"]

        wait_for(operator_notifications)
        assert len(operator_notifications()) == 1

        assert client.post("/payouts/run", json={"month": "2026-13"}).status_code == 400
        future = Month.of(datetime.now(UTC)).next()
        assert client.post("/payouts/run", json={"month": str(future)}).status_code == 422
        assert client.get("/payouts/1999-01/report").status_code == 404


def test_fifty_concurrent_signups_for_one_referrer_keep_exact_counters(live_server: LiveServer) -> None:
    with live_server.client() as client:
        code = enrol(client, "ref-1", "busy@example.com")["referralCode"]
    # 40 distinct new members and 10 that race a twin for the same userId: only one of each pair wins.
    user_ids = [f"friend-{n}" for n in range(40)] + [f"friend-{n}" for n in range(10)]

    def one(user_id: str) -> httpx.Response:
        with httpx.Client(base_url=live_server.url, headers=auth(), timeout=60) as own:
            return signup(own, userId=user_id, referralCode=code)

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(one, user_ids))

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 40, 409: 10}
    accepted = [r.json()["data"] for r in responses if r.status_code == 201]
    assert sorted(a["referralCount"] for a in accepted) == list(range(1, 41))
    for a in accepted:
        assert a["rewardAmount"] == f"{reward_cents_for(a['referralCount']) / 100:.2f}"
    expected_total = sum(reward_cents_for(n) for n in range(1, 41))
    with live_server.client() as client:
        view = client.get("/referrals/ref-1", params={"limit": 100}).json()["data"]
    assert view["referralCount"] == len(accepted) == 40
    assert view["totalRewards"] == f"{expected_total // 100}.{expected_total % 100:02d}"
    assert sorted(r["referralNumber"] for r in view["referrals"]) == list(range(1, 41))


def test_members_see_only_their_own_referrals_and_only_admins_review_or_pay(live_server: LiveServer) -> None:
    with live_server.client() as admin:
        code = enrol(admin, "ref-1", "one@example.com")["referralCode"]
        enrol(admin, "ref-2", "two@example.com")
        assert signup(admin, userId="friend-1", referralCode=code).status_code == 201
    with live_server.client("member", "ref-1") as member:
        assert member.get("/referrals/ref-1").json()["data"]["referralCount"] == 1
        assert member.get("/referrals/ref-2").status_code == 404
        assert member.post("/payouts/run", json={"month": "2026-01"}).status_code == 403
        assert member.get("/payouts").status_code == 403
        assert member.post("/referrals/rewards/ref_x/approve").status_code == 403
        assert member.post("/signup", json={"userId": "x", "referralCode": code}).status_code == 403


def test_held_rewards_are_reviewed_by_an_admin_over_http(server_factory: Any) -> None:
    server: LiveServer = server_factory(ACCRUE_REFERRAL_VELOCITY_MAX_SIGNUPS="2")
    with server.client() as client:
        code = enrol(client, "ref-1", "fast@example.com")["referralCode"]
        results = [signup(client, userId=f"friend-{n}", referralCode=code).json()["data"] for n in range(4)]
        assert [r["rewardStatus"] for r in results] == ["pending", "pending", "held", "held"]
        assert results[2]["message"].endswith("held for review")

        held = client.get("/referrals/rewards/held").json()["data"]["rewards"]
        assert [r["userId"] for r in held] == ["friend-2", "friend-3"]
        approved = client.post(f"/referrals/rewards/{held[0]['referralId']}/approve", headers={"Idempotency-Key": "a1"})
        assert approved.status_code == 200 and approved.json()["data"]["status"] == "pending"
        replay = client.post(f"/referrals/rewards/{held[0]['referralId']}/approve", headers={"Idempotency-Key": "a1"})
        assert replay.headers.get("Idempotent-Replayed") == "true" and replay.json() == approved.json()
        rejected = client.post(f"/referrals/rewards/{held[1]['referralId']}/reject")
        assert rejected.json()["data"]["status"] == "rejected"
        assert rejected.json()["data"]["reviewedBy"] == "admin"
        conflict = client.post(f"/referrals/rewards/{held[1]['referralId']}/approve")
        assert conflict.status_code == 409
        assert client.post("/referrals/rewards/ref_unknown/approve").status_code == 404

        view = client.get("/referrals/ref-1").json()["data"]
        assert (view["referralCount"], view["totalRewards"], view["heldRewards"], view["pendingRewards"]) == (
            4,
            "30.00",
            "0.00",
            "30.00",
        )
        assert client.get("/referrals/rewards/held").json()["data"]["rewards"] == []


def test_a_retried_signup_with_the_same_idempotency_key_counts_once(live_server: LiveServer) -> None:
    with live_server.client() as client:
        code = enrol(client, "ref-1", "retry@example.com")["referralCode"]
        body = {"userId": "friend-1", "referralCode": code}
        first = client.post("/signup", json=body, headers={"Idempotency-Key": "signup-friend-1"})
        again = client.post("/signup", json=body, headers={"Idempotency-Key": "signup-friend-1"})
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json()
        other = client.post(
            "/signup", json={**body, "userId": "friend-2"}, headers={"Idempotency-Key": "signup-friend-1"}
        )
        assert other.status_code == 422
        assert client.get("/referrals/ref-1").json()["data"]["referralCount"] == 1
