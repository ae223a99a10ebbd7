"""SQLite repository of campaigns; budgets are read from the ledger's campaign accounts (their
running totals, kept by triggers on the ledger, see migration 0301)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from accrue.adapters.sqlite.codec import dumps, encode_cursor, iso, loads, parse_iso
from accrue.adapters.sqlite.repositories import page_bounds
from accrue.domain.campaigns import Budget, Campaign, CampaignType, Conditions, Occasion
from accrue.domain.errors import Conflict
from accrue.domain.ledger import campaign_budget_account
from accrue.domain.loyalty import Tier
from accrue.ports import CampaignRepository, Page


def _rule(c: Campaign) -> dict[str, Any]:
    cond = c.conditions
    return {
        "points": c.points,
        "multiplier": str(c.multiplier),
        "description": c.description,
        "conditions": {
            "minAmount": None if cond.min_amount is None else str(cond.min_amount),
            "currency": cond.currency,
            "categories": sorted(cond.categories),
            "tiers": sorted(str(t) for t in cond.tiers),
            "firstOrderOnly": cond.first_order_only,
            "milestones": sorted(cond.milestones),
        },
        "budget": {"totalPoints": c.budget.total_points, "perMemberPoints": c.budget.per_member_points},
    }


def _campaign(row: sqlite3.Row) -> Campaign:
    rule = loads(row["rule"])
    cond = rule["conditions"]
    return Campaign(
        campaign_id=row["campaign_id"],
        name=row["name"],
        type=CampaignType(row["type"]),
        created_at=parse_iso(row["created_at"]),
        points=int(rule["points"]),
        multiplier=Decimal(rule["multiplier"]),
        conditions=Conditions(
            min_amount=None if cond["minAmount"] is None else Decimal(cond["minAmount"]),
            currency=cond["currency"],
            categories=frozenset(cond["categories"]),
            tiers=frozenset(Tier(t) for t in cond["tiers"]),
            first_order_only=bool(cond["firstOrderOnly"]),
            milestones=frozenset(int(m) for m in cond["milestones"]),
        ),
        starts_at=parse_iso(row["starts_at"]) if row["starts_at"] else None,
        ends_at=parse_iso(row["ends_at"]) if row["ends_at"] else None,
        ended_at=parse_iso(row["ended_at"]) if row["ended_at"] else None,
        priority=row["priority"],
        exclusive=bool(row["exclusive"]),
        budget=Budget(
            total_points=rule["budget"]["totalPoints"],
            per_member_points=rule["budget"]["perMemberPoints"],
        ),
        description=rule["description"],
    )


def _utc(value: datetime) -> str:
    """Like ``codec.iso`` (UTC, microseconds, ``Z``) with a four-digit year for every year, so that
    campaign dates before 1000 still parse and still sort in time order."""
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _opt_iso(value: datetime | None) -> str | None:
    return _utc(value) if value is not None else None


class SqliteCampaignRepository(CampaignRepository):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(self, campaign: Campaign) -> None:
        now = iso(campaign.created_at)
        try:
            self.conn.execute(
                "INSERT INTO campaigns (campaign_id, name, type, occasion, rule, priority, exclusive, starts_at, "
                "ends_at, ended_at, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    campaign.campaign_id,
                    campaign.name,
                    str(campaign.type),
                    str(campaign.occasion),
                    dumps(_rule(campaign)),
                    campaign.priority,
                    int(campaign.exclusive),
                    _opt_iso(campaign.starts_at),
                    _opt_iso(campaign.ends_at),
                    _opt_iso(campaign.ended_at),
                    now,
                    now,
                ),
            )
        except sqlite3.IntegrityError:
            raise Conflict(f"campaign {campaign.campaign_id} already exists", details={"field": "campaignId"}) from None

    def get(self, campaign_id: str) -> Campaign | None:
        row = self.conn.execute("SELECT * FROM campaigns WHERE campaign_id = ?", (campaign_id,)).fetchone()
        return _campaign(row) if row else None

    def save(self, campaign: Campaign) -> None:
        self.conn.execute(
            "UPDATE campaigns SET ended_at = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') "
            "WHERE campaign_id = ?",
            (_opt_iso(campaign.ended_at), campaign.campaign_id),
        )

    def running(self, occasion: Occasion, at: datetime) -> list[Campaign]:
        when = _utc(at)
        rows = self.conn.execute(
            "SELECT * FROM campaigns WHERE occasion = ? AND (starts_at IS NULL OR starts_at <= ?) "
            "AND (ends_at IS NULL OR ends_at > ?) AND (ended_at IS NULL OR ended_at > ?)",
            (str(occasion), when, when, when),
        ).fetchall()
        return [_campaign(r) for r in rows]

    def drawn(self, campaign_id: str, user_id: str | None = None) -> int:
        # Running totals kept by triggers on the ledger (migration 0301): one row, not a history sum.
        row = self.conn.execute(
            "SELECT paid FROM campaign_account_totals WHERE account = ? AND member_id = ?",
            (campaign_budget_account(campaign_id), user_id or ""),
        ).fetchone()
        return int(row[0]) if row else 0

    def drawn_many(self, campaign_ids: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for campaign_id in campaign_ids:
            value = self.drawn(campaign_id)
            if value:
                found[campaign_id] = value
        return found

    def _posted(self) -> dict[tuple[str, str], int]:
        """Net points paid out of every campaign account, per member and in total, from the postings."""
        posted: dict[tuple[str, str], int] = {}
        for row in self.conn.execute(
            "SELECT account, member_id, SUM(delta) FROM ("
            " SELECT debit_account AS account, member_id, amount AS delta FROM transfers"
            " WHERE debit_account GLOB 'campaign:*'"
            " UNION ALL SELECT credit_account, member_id, -amount FROM transfers"
            " WHERE credit_account GLOB 'campaign:*'"
            ") GROUP BY account, member_id"
        ):
            account, member_id, paid = row[0], row[1], int(row[2])
            posted[(account, member_id)] = paid
            posted[(account, "")] = posted.get((account, ""), 0) + paid
        return posted

    def check(self) -> list[str]:
        problems: list[str] = []
        posted = self._posted()
        totals = {
            (r[0], r[1]): int(r[2])
            for r in self.conn.execute("SELECT account, member_id, paid FROM campaign_account_totals")
        }
        for key in sorted(set(posted) | set(totals)):
            if posted.get(key, 0) != totals.get(key, 0):
                who = f" for member {key[1]}" if key[1] else ""
                problems.append(
                    f"account {key[0]}{who}: running total {totals.get(key, 0)} != sum of postings {posted.get(key, 0)}"
                )
        for row in self.conn.execute("SELECT campaign_id FROM campaigns ORDER BY seq"):
            campaign = self.get(row["campaign_id"])
            if campaign is None:
                continue
            account = campaign.budget_account
            total, per_member = campaign.budget.total_points, campaign.budget.per_member_points
            paid = posted.get((account, ""), 0)
            if total is not None and paid > total:
                problems.append(f"campaign {campaign.campaign_id}: paid {paid} points, over its budget of {total}")
            if per_member is not None:
                for (acct, member_id), value in sorted(posted.items()):
                    if acct == account and member_id and value > per_member:
                        problems.append(
                            f"campaign {campaign.campaign_id}: paid member {member_id} "
                            f"{value} points, over its per-member budget of {per_member}"
                        )
        return problems

    def list(self, limit: int, cursor: str | None) -> Page[Campaign]:
        before = page_bounds(cursor)
        rows = self.conn.execute(
            "SELECT * FROM campaigns WHERE seq < ? ORDER BY seq DESC LIMIT ?", (before, limit + 1)
        ).fetchall()
        next_cursor = encode_cursor(rows[limit - 1]["seq"]) if len(rows) > limit else None
        return Page([_campaign(r) for r in rows[:limit]], next_cursor)
