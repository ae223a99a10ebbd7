"""The campaign engine through the API and the outbox worker, on a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from accrue.bootstrap import Application, bootstrap
from accrue.domain import events
from accrue.domain.ledger import Reason, campaign_budget_account
from accrue.entrypoints.api.app import create_app
from tests.conftest import auth, make_settings

ADMIN = auth()


def new_member(client: TestClient, email: str = "ann@example.com") -> dict[str, Any]:
    response = client.post("/users", json={"email": email, "name": "Ann"}, headers=ADMIN)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def new_campaign(client: TestClient, definition: dict[str, Any]) -> str:
    response = client.post("/campaigns", json=definition, headers=ADMIN)
    assert response.status_code == 201, response.text
    campaign_id: str = response.json()["data"]["campaignId"]
    return campaign_id


def order(client: TestClient, user_id: str, amount: str, category: str | None = "electronics") -> dict[str, Any]:
    items = [{"sku": "sku-1", "quantity": 1, "price": amount, "category": category}] if category else []
    response = client.post("/orders", json={"userId": user_id, "amount": amount, "items": items}, headers=ADMIN)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def campaign(client: TestClient, campaign_id: str) -> dict[str, Any]:
    response = client.get(f"/campaigns/{campaign_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def history(client: TestClient, user_id: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = client.get(f"/points/{user_id}/history?limit=100", headers=ADMIN).json()["data"][
        "history"
    ]
    return entries


def points(client: TestClient, user_id: str) -> dict[str, Any]:
    data: dict[str, Any] = client.get(f"/points/{user_id}", headers=ADMIN).json()["data"]
    return data


def ledger_problems(app: Application) -> list[str]:
    problems: list[str] = app.bus.query(lambda uow: uow.ledger.check())
    return problems


ELECTRONICS_2X = {
    "name": "Black Friday 2X",
    "type": "purchase_multiplier",
    "multiplier": 2,
    "conditions": {"minAmount": 100, "categories": ["electronics", "clothing"]},
}
SPEND_100_GET_50 = {"name": "Spend $100, get 50", "type": "fixed_bonus", "points": 50, "conditions": {"minAmount": 100}}


def test_the_welcome_bonus_is_the_default_signup_campaign_with_the_same_observable_result(
    client: TestClient, app: Application
) -> None:
    user = new_member(client)
    assert user["points"] == 100
    assert points(client, user["userId"]) == {"userId": user["userId"], "balance": 100, "lifetime": 0, "tier": "BRONZE"}
    (entry,) = history(client, user["userId"])
    assert (entry["reason"], entry["reference"], entry["points"]) == ("welcome_bonus", "campaign:cmp_welcome", 100)
    welcome = campaign(client, "cmp_welcome")
    assert (welcome["status"], welcome["pointsAwarded"], welcome["managedByConfiguration"]) == ("active", 100, True)
    assert ledger_problems(app) == []


def test_a_member_enrolled_by_a_seed_000_transaction_gets_no_signup_bonus(client: TestClient) -> None:
    response = client.post(
        "/transactions",
        json={"memberId": "walk-in", "transactionAmount": "10", "transactionType": "purchase"},
        headers=ADMIN,
    )
    assert response.json()["data"]["totalPoints"] == 1


@pytest.fixture
def no_welcome_client(tmp_path: Path) -> Iterator[TestClient]:
    application = bootstrap(make_settings(tmp_path, welcome_bonus_points=0))
    with TestClient(create_app(application)) as test_client:
        yield test_client
    application.close()


def test_a_zero_welcome_setting_turns_the_default_off_but_other_signup_campaigns_still_apply(
    no_welcome_client: TestClient,
) -> None:
    client = no_welcome_client
    assert new_member(client, "a@example.com")["points"] == 0
    assert client.get("/campaigns/cmp_welcome", headers=ADMIN).status_code == 404
    new_campaign(client, {"name": "Launch week", "type": "signup_bonus", "points": 250})
    assert new_member(client, "b@example.com")["points"] == 250


def test_an_electronics_order_of_150_earns_80_with_both_campaigns_and_one_of_90_earns_9(
    client: TestClient, app: Application
) -> None:
    multiplier_id = new_campaign(client, ELECTRONICS_2X)
    bonus_id = new_campaign(client, SPEND_100_GET_50)
    user_id = new_member(client)["userId"]

    big = order(client, user_id, "150.00")
    assert big["pointsEarned"] == 80
    small = order(client, user_id, "90.00")
    assert small["pointsEarned"] == 9
    assert points(client, user_id)["balance"] == 100 + 80 + 9
    assert points(client, user_id)["lifetime"] == 80 + 9  # campaign points qualify for tiers

    awards = {e["transactionId"]: e for e in history(client, user_id) if e["reason"] == "campaign"}
    assert awards[f"campaign:{multiplier_id}:order:{big['orderId']}"]["points"] == 15
    assert awards[f"campaign:{bonus_id}:order:{big['orderId']}"]["reference"] == f"campaign:{bonus_id}"
    assert campaign(client, multiplier_id)["pointsAwarded"] == 15
    assert campaign(client, bonus_id)["pointsAwarded"] == 50
    # The order's stored points are what it answered with.
    listed = client.get("/orders", params={"userId": user_id}, headers=ADMIN).json()["data"]["orders"]
    assert sorted(o["pointsEarned"] for o in listed) == [9, 80]
    assert ledger_problems(app) == []


def test_an_exclusive_campaign_of_higher_priority_stops_the_others(client: TestClient) -> None:
    new_campaign(client, SPEND_100_GET_50)
    new_campaign(client, {**ELECTRONICS_2X, "name": "VIP triple", "multiplier": 3, "priority": 10, "exclusive": True})
    user_id = new_member(client)["userId"]
    assert order(client, user_id, "150.00")["pointsEarned"] == 15 + 30


def test_budgets_cap_awards_in_total_and_per_member_from_the_ledger(client: TestClient, app: Application) -> None:
    total_id = new_campaign(client, {**SPEND_100_GET_50, "budget": {"totalPoints": 120}})
    ann = new_member(client, "ann@example.com")["userId"]
    bob = new_member(client, "bob@example.com")["userId"]
    assert order(client, ann, "100.00", None)["pointsEarned"] == 10 + 50
    assert order(client, bob, "100.00", None)["pointsEarned"] == 10 + 50
    assert order(client, ann, "100.00", None)["pointsEarned"] == 10 + 20  # the last 20 of the budget
    assert order(client, bob, "100.00", None)["pointsEarned"] == 10
    view = campaign(client, total_id)
    assert (view["pointsAwarded"], view["budgetRemaining"]) == (120, 0)

    client.patch(f"/campaigns/{total_id}", json={"status": "ended"}, headers=ADMIN)
    per_member_id = new_campaign(client, {**SPEND_100_GET_50, "points": 40, "budget": {"perMemberPoints": 60}})
    assert [order(client, ann, "100.00", None)["pointsEarned"] for _ in range(3)] == [50, 30, 10]
    assert order(client, bob, "100.00", None)["pointsEarned"] == 50
    view = campaign(client, per_member_id)
    assert (view["pointsAwarded"], view["budgetRemaining"]) == (100, None)
    assert ledger_problems(app) == []


def test_a_campaign_ended_early_awards_nothing_more_and_ending_it_again_changes_nothing(client: TestClient) -> None:
    campaign_id = new_campaign(client, SPEND_100_GET_50)
    user_id = new_member(client)["userId"]
    assert order(client, user_id, "100.00")["pointsEarned"] == 60
    ended = client.patch(f"/campaigns/{campaign_id}", json={"status": "ended"}, headers=ADMIN)
    assert ended.status_code == 200, ended.text
    assert ended.json()["data"]["status"] == "ended"
    again = client.patch(f"/campaigns/{campaign_id}", json={"status": "ended"}, headers=ADMIN)
    assert again.json()["data"]["endedAt"] == ended.json()["data"]["endedAt"]
    assert order(client, user_id, "100.00")["pointsEarned"] == 10
    refused = client.patch("/campaigns/cmp_welcome", json={"status": "ended"}, headers=ADMIN)
    assert refused.status_code == 409
    assert client.patch("/campaigns/cmp_nope", json={"status": "ended"}, headers=ADMIN).status_code == 404
    assert client.patch(f"/campaigns/{campaign_id}", json={"status": "active"}, headers=ADMIN).status_code == 400


def test_status_follows_the_dates(client: TestClient) -> None:
    def status_of(definition: dict[str, Any]) -> str:
        response = client.post("/campaigns", json={**SPEND_100_GET_50, **definition}, headers=ADMIN)
        assert response.status_code == 201, response.text
        value: str = response.json()["data"]["status"]
        return value

    assert status_of({"startDate": "2999-01-01T00:00:00Z"}) == "scheduled"
    assert status_of({"startDate": "2020-01-01T00:00:00Z", "endDate": "2999-01-01T00:00:00+02:00"}) == "active"
    assert status_of({"startDate": "2020-01-01T00:00:00Z", "endDate": "2020-02-01T00:00:00Z"}) == "ended"
    assert status_of({}) == "active"
    assert status_of({"startDate": "0005-01-01T00:00:00Z", "endDate": "0999-01-01T00:00:00Z"}) == "ended"
    assert client.get("/campaigns", headers=ADMIN).status_code == 200  # early years are stored readably


@pytest.mark.parametrize(
    ("definition", "field", "rule"),
    [
        ({"name": "x", "type": "fixed_bonus"}, "points", "is required for type fixed_bonus"),
        ({"name": "x", "type": "purchase_multiplier", "points": 5, "multiplier": 2}, "points", "is not allowed"),
        (
            {"name": "x", "type": "signup_bonus", "points": 5, "conditions": {"minAmount": 1}},
            "conditions.minAmount",
            "",
        ),
        ({"name": "x", "type": "fixed_bonus", "points": 5, "script": "1+1"}, "script", "is not a known field"),
        ({"name": "x", "type": "bogus", "points": 5}, "type", "must be one of"),
        ({"name": "x", "type": "fixed_bonus", "points": 1.5}, "points", "must be a whole number"),
        ({"name": "x", "type": "fixed_bonus", "points": 0}, "points", "must be at least 1"),
        ({"name": "x", "type": "purchase_multiplier", "multiplier": 1}, "multiplier", "must be greater than 1"),
        ({"name": "x", "type": "fixed_bonus", "points": 5, "startDate": "tomorrow"}, "startDate", "RFC 3339"),
        ({**SPEND_100_GET_50, "startDate": "2026-02-30T00:00:00Z"}, "startDate", "RFC 3339"),
        ({**SPEND_100_GET_50, "endDate": "2026-01-01T00:00:00"}, "endDate", "RFC 3339"),
        ({**SPEND_100_GET_50, "conditions": {"currency": "XXY"}}, "conditions.currency", "ISO 4217"),
        ({**SPEND_100_GET_50, "conditions": {"tiers": ["GOLD", "GOLD"]}}, "conditions.tiers", "must not repeat"),
        ({"type": "fixed_bonus", "points": 5}, "name", "is required"),
    ],
)
def test_a_bad_definition_is_refused_with_the_field_and_the_rule_and_nothing_is_stored(
    client: TestClient, definition: dict[str, Any], field: str, rule: str
) -> None:
    response = client.post("/campaigns", json=definition, headers=ADMIN)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["details"]["field"] == field
    assert rule in error["details"]["rule"]
    assert [c["campaignId"] for c in client.get("/campaigns", headers=ADMIN).json()["data"]["campaigns"]] == [
        "cmp_welcome"
    ]


def test_dates_that_are_fine_alone_but_not_together_or_not_storable_are_422(client: TestClient) -> None:
    for dates, field in (
        ({"startDate": "2026-01-02T00:00:00Z", "endDate": "2026-01-02T00:59:59+01:00"}, "endDate"),
        ({"endDate": "9999-12-31T23:00:00-05:00"}, "endDate"),
    ):
        response = client.post("/campaigns", json={**SPEND_100_GET_50, **dates}, headers=ADMIN)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["details"]["field"] == field


def test_whole_numbers_written_with_a_fraction_and_long_fractions_of_seconds_are_accepted(client: TestClient) -> None:
    body = (
        b'{"name": "x", "type": "fixed_bonus", "points": 50.0, "priority": 5.00, "budget": {"totalPoints": 1e3},'
        b' "startDate": "2020-01-01t00:00:00.123456789z"}'
    )
    response = client.post("/campaigns", content=body, headers={**ADMIN, "Content-Type": "application/json"})
    assert response.status_code == 201, response.text
    view = campaign(client, response.json()["data"]["campaignId"])
    assert (view["points"], view["priority"], view["budget"]["totalPoints"]) == (50, 5, 1000)
    assert view["startDate"] == "2020-01-01T00:00:00.123456Z"


def test_json_that_is_not_a_campaign_document_is_refused(client: TestClient) -> None:
    for body in (b"[1, 2]", b"{not json", b'{"name": "x", "type": "fixed_bonus", "points": NaN}'):
        response = client.post("/campaigns", content=body, headers={**ADMIN, "Content-Type": "application/json"})
        assert response.status_code == 400, body
        assert response.json()["error"]["details"]["field"] == "body"


def test_a_retried_create_with_the_same_idempotency_key_creates_one_campaign(client: TestClient) -> None:
    headers = {**ADMIN, "Idempotency-Key": "cmp-1"}
    first = client.post("/campaigns", json=SPEND_100_GET_50, headers=headers)
    second = client.post("/campaigns", json=SPEND_100_GET_50, headers=headers)
    assert first.json() == second.json()
    assert len(client.get("/campaigns", headers=ADMIN).json()["data"]["campaigns"]) == 2


def test_campaigns_are_listed_newest_first_with_cursor_pagination(client: TestClient) -> None:
    ids = [new_campaign(client, {**SPEND_100_GET_50, "name": f"c{i}"}) for i in range(3)]
    first = client.get("/campaigns?limit=2", headers=ADMIN).json()["data"]
    assert [c["campaignId"] for c in first["campaigns"]] == ["cmp_welcome", ids[2], ids[1]]
    rest = client.get(f"/campaigns?limit=2&cursor={first['nextCursor']}", headers=ADMIN).json()["data"]
    assert [c["campaignId"] for c in rest["campaigns"]] == [ids[0]]
    assert rest["nextCursor"] is None


def test_a_milestone_bonus_is_paid_after_commit_once_per_milestone(client: TestClient, app: Application) -> None:
    campaign_id = new_campaign(
        client, {"name": "500 club", "type": "milestone_bonus", "points": 75, "conditions": {"milestones": [500]}}
    )
    user_id = new_member(client)["userId"]
    order(client, user_id, "5000.00")  # 500 qualifying points: crosses 100 and 500 in one posting
    app.worker.drain()
    awards = [e for e in history(client, user_id) if e["reason"] == "campaign"]
    assert [(a["transactionId"], a["points"]) for a in awards] == [
        (f"campaign:{campaign_id}:milestone:{user_id}:500", 75)
    ]
    # A redelivered event pays nothing twice.
    with app.bus.uow_factory() as uow:
        replay = events.MilestonesReached(
            user_id=user_id, milestones=(100, 500), points=675, lifetime=575, tier="BRONZE"
        )
        app.bus.handle_event("award_milestone_bonus", replay, uow)
        uow.commit()
    assert points(client, user_id)["balance"] == 100 + 500 + 75
    assert campaign(client, campaign_id)["pointsAwarded"] == 75
    assert ledger_problems(app) == []


def outbox_handlers(app: Application, event_name: str) -> list[str]:
    with app.bus.uow_factory(readonly=True) as uow:
        rows = uow.connection.execute(
            "SELECT handler FROM outbox WHERE event_name = ? ORDER BY handler", (event_name,)
        ).fetchall()
    return [row[0] for row in rows]


def test_without_a_running_milestone_campaign_no_bonus_work_is_queued_for_a_milestone(
    client: TestClient, app: Application
) -> None:
    user_id = new_member(client)["userId"]
    order(client, user_id, "5000.00")  # crosses 500: the notification is queued, the bonus is not
    assert set(outbox_handlers(app, "MilestonesReached")) == {"notify_milestones_reached"}
    # Once one runs, the next milestone queues the bonus too (and it is paid).
    new_campaign(
        client, {"name": "2500 club", "type": "milestone_bonus", "points": 40, "conditions": {"milestones": [2500]}}
    )
    order(client, user_id, "20000.00")
    assert outbox_handlers(app, "MilestonesReached").count("award_milestone_bonus") == 1
    app.worker.drain()
    assert [e["points"] for e in history(client, user_id) if e["reason"] == "campaign"] == [40]


def test_a_referral_bonus_goes_to_the_referrer_after_the_signup_commits(client: TestClient, app: Application) -> None:
    new_campaign(client, {"name": "Bring a friend", "type": "referral_bonus", "points": 300})
    referrer = new_member(client)
    signup = client.post(
        "/signup",
        json={"userId": "friend-1", "referralCode": referrer["referralCode"], "email": "friend@example.com"},
        headers=ADMIN,
    )
    assert signup.status_code == 201, signup.text
    app.worker.drain()
    assert points(client, referrer["userId"])["balance"] == 100 + 300
    (award,) = [e for e in history(client, referrer["userId"]) if e["reason"] == "campaign"]
    assert award["transactionId"].endswith(f":referral:{signup.json()['data']['referralId']}")
    assert points(client, "friend-1")["balance"] == 100  # the friend gets the welcome bonus only


def test_only_admins_define_campaigns_and_members_cannot_read_them(client: TestClient) -> None:
    assert client.post("/campaigns", json=SPEND_100_GET_50, headers=auth("service", "pos")).status_code == 403
    assert client.get("/campaigns", headers=auth("member", "usr_1")).status_code == 403
    assert client.get("/campaigns", headers=auth("service", "pos")).status_code == 200
    assert client.get("/campaigns/cmp_unknown", headers=ADMIN).status_code == 404


def test_the_ledger_check_reports_a_campaign_that_paid_over_its_budgets(client: TestClient, app: Application) -> None:
    campaign_id = new_campaign(client, {**SPEND_100_GET_50, "budget": {"totalPoints": 10, "perMemberPoints": 5}})
    user_id = new_member(client)["userId"]
    assert app.bus.query(lambda uow: uow.campaigns.check()) == []
    with app.bus.uow_factory() as uow:  # an award that bypassed the engine's budget check
        member = uow.track(uow.members.get(user_id))
        member.credit(
            transfer_id="forged",
            points=20,
            reason=Reason.CAMPAIGN,
            reference=f"campaign:{campaign_id}",
            now=app.clock(),
            source_account=campaign_budget_account(campaign_id),
        )
        uow.commit()
    problems = app.bus.query(lambda uow: uow.campaigns.check())
    assert problems == [
        f"campaign {campaign_id}: paid 20 points, over its budget of 10",
        f"campaign {campaign_id}: paid member {user_id} 20 points, over its per-member budget of 5",
    ]


def test_budgets_are_read_from_running_totals_the_ledger_keeps_and_the_check_catches_any_drift(
    client: TestClient, app: Application
) -> None:
    campaign_id = new_campaign(client, {**SPEND_100_GET_50, "budget": {"totalPoints": 500}})
    user_id = new_member(client)["userId"]
    for _ in range(3):
        order(client, user_id, "100.00")
    assert app.bus.query(lambda uow: (uow.campaigns.drawn(campaign_id), uow.campaigns.drawn(campaign_id, user_id))) == (
        150,
        150,
    )
    assert app.database is not None
    with app.database.write() as conn:  # tampering behind the ledger's back
        conn.execute("UPDATE campaign_account_totals SET paid = 10 WHERE member_id = ''")
    problems = app.bus.query(lambda uow: uow.campaigns.check())
    assert f"account campaign:{campaign_id}:budget: running total 10 != sum of postings 150" in problems
    # The check's own sums read only campaign postings, through the partial indexes.
    plan = " ".join(
        str(row[3])
        for row in app.database.connection().execute(
            "EXPLAIN QUERY PLAN SELECT SUM(amount) FROM transfers WHERE debit_account GLOB 'campaign:*' "
            "UNION ALL SELECT SUM(amount) FROM transfers WHERE credit_account GLOB 'campaign:*'"
        )
    )
    assert "transfers_campaign_debits" in plan and "transfers_campaign_credits" in plan, plan


def test_a_processed_payment_of_a_member_gets_purchase_campaigns_once_after_it_commits(
    client: TestClient, app: Application
) -> None:
    from accrue.domain.payments import PaymentProcessed

    campaign_id = new_campaign(client, SPEND_100_GET_50)
    new_campaign(client, ELECTRONICS_2X)  # a payment has no items: category campaigns do not apply
    user_id = new_member(client)["userId"]
    paid = PaymentProcessed(payment_id="pay_1", amount="120.00", currency="USD", amount_minor=12000, user_id=user_id)
    for _ in range(2):  # delivered twice
        with app.bus.uow_factory() as uow:
            app.bus.handle_event("award_payment_campaigns", paid, uow)
            uow.commit()
    anonymous = PaymentProcessed(payment_id="pay_2", amount="500.00", currency="USD", amount_minor=50000)
    with app.bus.uow_factory() as uow:
        app.bus.handle_event("award_payment_campaigns", anonymous, uow)
        uow.commit()
    awards = [e for e in history(client, user_id) if e["reason"] == "campaign"]
    assert [(a["transactionId"], a["points"]) for a in awards] == [(f"campaign:{campaign_id}:payment:pay_1", 50)]


def test_the_running_totals_follow_every_posting_into_or_out_of_a_campaign_account(app: Application) -> None:
    """The totals the database keeps (one trigger on the ledger): paid out of an account, returned
    to it, and a move between two campaign accounts, each net per member and in all; postings
    between other accounts leave them alone."""
    assert app.database is not None
    columns = (
        "transfer_id, debit_account, credit_account, amount, reason, reference, member_id, member_delta, "
        "balance_after, created_at"
    )
    rows = [
        ("t1", "campaign:a:budget", "member:m1:points", 30, "campaign", "r", "m1", 30, 30),
        ("t2", "campaign:a:budget", "member:m2:points", 20, "campaign", "r", "m2", 20, 20),
        ("t3", "member:m1:points", "campaign:a:budget", 10, "reverse", "t1", "m1", -10, 20),
        ("t4", "campaign:a:budget", "campaign:b:budget", 7, "adjust", "r", "m2", 0, 20),
        ("t5", "program:issued", "member:m1:points", 99, "earn", "r", "m1", 99, 119),
    ]
    with app.database.write() as conn:
        conn.executemany(
            f"INSERT INTO transfers ({columns}) VALUES (?,?,?,?,?,?,?,?,?,'2026-12-06T00:00:00.000000Z')", rows
        )
    totals = dict(
        ((account, member), paid)
        for account, member, paid in app.database.connection().execute("SELECT * FROM campaign_account_totals")
    )
    assert totals == {
        ("campaign:a:budget", ""): 30 + 20 - 10 + 7,
        ("campaign:a:budget", "m1"): 30 - 10,
        ("campaign:a:budget", "m2"): 20 + 7,
        ("campaign:b:budget", ""): -7,
        ("campaign:b:budget", "m2"): -7,
    }
