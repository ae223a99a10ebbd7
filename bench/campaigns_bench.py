"""What campaign evaluation costs an order, and what a long budget history costs the budget check.

    .venv/bin/python bench/campaigns_bench.py                # 2 000 orders per phase
    .venv/bin/python bench/campaigns_bench.py --orders 500   # a quicker run

Three phases in one process, each on its own new SQLite file (``synchronous=FULL``, the default),
each placing the same orders (``CreateOrder`` through the bus, 50 members, 150.00 of electronics):

- **baseline**: no campaign (the order's own points, tier bonus, order row, outbox event);
- **campaigns**: five purchase campaigns that all apply (two with total and per-member budgets, so
  every order reads two budgets from the ledger and posts five more transfers);
- **long budget**: the same five, after the budgeted campaigns already paid ``--history`` awards
  (inserted straight into the ledger): a budget check reads the account's running total, so a long
  award history must not slow orders down.

Goals: campaigns >= 0.4 x baseline (five extra postings per order); long budget >= 0.8 x campaigns.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from accrue.bootstrap import Application, bootstrap
from accrue.config import Settings
from accrue.domain import commands
from accrue.domain.campaigns import CreateCampaign
from accrue.domain.ledger import Reason, Transfer, campaign_budget_account

MEMBERS = 50
CAMPAIGNS: list[dict[str, Any]] = [
    {
        "name": "2x electronics",
        "type": "purchase_multiplier",
        "multiplier": 2,
        "conditions": {"categories": ["electronics"]},
    },
    {"name": "+50 over 100", "type": "fixed_bonus", "points": 50, "conditions": {"minAmount": 100}},
    {"name": "1.5x", "type": "purchase_multiplier", "multiplier": Decimal("1.5")},
    {
        "name": "budgeted",
        "type": "fixed_bonus",
        "points": 1,
        "budget": {"totalPoints": 10**9, "perMemberPoints": 10**8},
    },
    {
        "name": "budgeted 2",
        "type": "fixed_bonus",
        "points": 2,
        "budget": {"totalPoints": 10**9, "perMemberPoints": 10**8},
    },
]


def fresh_app(root: Path, name: str) -> Application:
    folder = root / name
    return bootstrap(Settings(env="test", db=folder / "bench.db", blob_dir=folder / "blobs", workers_enabled=False))


def members(app: Application) -> list[str]:
    return [
        app.bus.handle(commands.CreateMember(email=f"m{i}@example.com", name=f"M{i}")).user_id for i in range(MEMBERS)
    ]


def place_orders(app: Application, user_ids: list[str], orders: int) -> tuple[float, int]:
    item = commands.OrderItem(sku="tv", quantity=1, price=Decimal("150.00"), category="electronics")
    earned = 0
    started = time.perf_counter()
    for n in range(orders):
        order = app.bus.handle(
            commands.CreateOrder(
                user_id=user_ids[n % len(user_ids)], amount=Decimal("150.00"), currency="USD", items=(item,)
            )
        )
        earned += order.points_earned
    return orders / (time.perf_counter() - started), earned


def add_history(app: Application, campaign_ids: list[str], user_ids: list[str], awards: int) -> None:
    """Past awards of the budgeted campaigns, written straight into the ledger (balances unchanged:
    only the budget sums read them)."""
    now = datetime.now(UTC)
    for campaign_id in campaign_ids:
        with app.bus.uow_factory() as uow:
            uow.ledger.append_many(
                [
                    Transfer(
                        transfer_id=f"campaign:{campaign_id}:history:{n}",
                        debit_account=campaign_budget_account(campaign_id),
                        credit_account=f"member:{user_ids[n % len(user_ids)]}:points",
                        amount=1,
                        reason=Reason.CAMPAIGN,
                        reference=f"campaign:{campaign_id}",
                        member_id=user_ids[n % len(user_ids)],
                        balance_after=0,
                        created_at=now,
                        member_delta=0,
                    )
                    for n in range(awards)
                ]
            )
            uow.commit()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--history", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        results: dict[str, tuple[float, int]] = {}
        for phase in ("baseline", "campaigns", "long budget"):
            app = fresh_app(root, phase.replace(" ", "_"))
            try:
                user_ids = members(app)
                ids = (
                    []
                    if phase == "baseline"
                    else [app.bus.handle(CreateCampaign(definition=c)).campaign_id for c in CAMPAIGNS]
                )
                if phase == "long budget":
                    add_history(app, ids[3:], user_ids, args.history)
                results[phase] = place_orders(app, user_ids, args.orders)
            finally:
                app.close()
    base, camp, long_ = (results[p][0] for p in ("baseline", "campaigns", "long budget"))
    for phase, (rate, earned) in results.items():
        print(f"{phase:12s} {rate:8.0f} orders/s   points per order {earned / args.orders:.0f}")
    print(f"campaigns / baseline   {camp / base:.2f}  (goal >= 0.4)")
    print(f"long budget / campaigns {long_ / camp:.2f}  (goal >= 0.8; {args.history} past awards per budget)")


if __name__ == "__main__":
    main()
