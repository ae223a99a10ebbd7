"""DynamoDB repository of campaigns.

What a campaign has paid is kept as running totals next to the ledger (``ACCOUNT#<budget
account>``: one total, one per member), updated in the transaction of every transfer that touches
the budget account. ``drawn`` reads a total and notes the value; the award's transaction then
adds to it only if it still holds that value, so two concurrent orders cannot both spend the
last of a budget (one is refused with a ConcurrencyConflict and retried against the new total).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from accrue.adapters.aws import codec, keys
from accrue.adapters.aws.dynamodb_uow import Session, Write
from accrue.adapters.aws.repositories import ENTITY, page
from accrue.adapters.aws.table import GSI1, GSI2, PARTITION_KEY
from accrue.domain.campaigns import Campaign, Occasion
from accrue.domain.errors import Conflict
from accrue.domain.ledger import Transfer, campaign_budget_account
from accrue.ports import CampaignRepository, Page

CAMPAIGN_ACCOUNT_PREFIX = "campaign:"
PAID = "paid"


def stage_account_totals(session: Session, transfer: Transfer, group: str) -> None:
    """Keep the running totals of campaign budget accounts with the transfer that moves them."""
    for account, sign in ((transfer.debit_account, 1), (transfer.credit_account, -1)):
        if account.startswith(CAMPAIGN_ACCOUNT_PREFIX):
            delta = sign * transfer.amount
            session.add_to(keys.account_total(account), PAID, delta, group, must_exist=False)
            session.add_to(keys.account_member_total(account, transfer.member_id), PAID, delta, group, must_exist=False)


def _in_window(campaign: Campaign, at: datetime) -> bool:
    return (
        (campaign.starts_at is None or campaign.starts_at <= at)
        and (campaign.ends_at is None or campaign.ends_at > at)
        and (campaign.ended_at is None or campaign.ended_at > at)
    )


class DynamoCampaignRepository(CampaignRepository):
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, campaign: Campaign) -> None:
        item = codec.to_attributes(campaign)
        item[ENTITY] = "campaign"
        item.update(keys.campaign_indexes(str(campaign.occasion), campaign.created_at, campaign.campaign_id))

        def taken() -> Exception:
            return Conflict(f"campaign {campaign.campaign_id} already exists", details={"field": "campaignId"})

        if self.session.staged(keys.campaign(campaign.campaign_id)) is not None:
            raise taken()
        self.session.stage(Write.insert(keys.campaign(campaign.campaign_id), item, conflict=taken))

    def get(self, campaign_id: str) -> Campaign | None:
        item = self.session.get(keys.campaign(campaign_id))
        return codec.from_attributes(Campaign, item) if item else None

    def save(self, campaign: Campaign) -> None:
        values: dict[str, Any] = {}
        if campaign.ended_at is None:
            update = "REMOVE ended_at"
        else:
            update = "SET ended_at = :ended"
            values[":ended"] = codec.encode_value(campaign.ended_at)
        self.session.stage(
            Write(
                "Update",
                keys.campaign(campaign.campaign_id),
                update=update,
                condition=f"attribute_exists({PARTITION_KEY})",
                values=values,
            ),
            replace=True,
        )

    def running(self, occasion: Occasion, at: datetime) -> list[Campaign]:
        found: list[Campaign] = []
        for items, _ in self.session.query(
            IndexName=GSI2.name,
            KeyConditionExpression="#pk = :pk",
            ExpressionAttributeNames={"#pk": GSI2.partition_key},
            ExpressionAttributeValues={":pk": keys.join(keys.Prefix.CAMPAIGNS, str(occasion))},
        ):
            found.extend(c for c in (codec.from_attributes(Campaign, i) for i in items) if _in_window(c, at))
        return found

    def drawn(self, campaign_id: str, user_id: str | None = None) -> int:
        account = campaign_budget_account(campaign_id)
        key = keys.account_total(account) if user_id is None else keys.account_member_total(account, user_id)
        item = self.session.get(key, projection=(PAID,))
        value = int(item[PAID]) if item and PAID in item else 0
        self.session.observe(key, PAID, value)
        return value + self.session.pending_delta(key, PAID)

    def drawn_many(self, campaign_ids: Sequence[str]) -> dict[str, int]:
        items = self.session.batch_get(
            [keys.account_total(campaign_budget_account(c)) for c in campaign_ids], projection=(PAID,)
        )
        by_key = {str(i[PARTITION_KEY]): int(i.get(PAID, 0)) for i in items}
        found: dict[str, int] = {}
        for campaign_id in campaign_ids:
            value = by_key.get(keys.account_total(campaign_budget_account(campaign_id))[PARTITION_KEY], 0)
            if value:
                found[campaign_id] = value
        return found

    def check(self) -> list[str]:
        """Recomputed from the ledger itself (not the running totals), like the SQLite check."""
        campaigns: list[Campaign] = []
        for items, _ in self.session.query(
            IndexName=GSI1.name,
            KeyConditionExpression="#pk = :pk",
            ExpressionAttributeNames={"#pk": GSI1.partition_key},
            ExpressionAttributeValues={":pk": str(keys.Prefix.CAMPAIGNS)},
            ScanIndexForward=True,
        ):
            campaigns.extend(codec.from_attributes(Campaign, i) for i in items)
        if not campaigns:
            return []
        paid: dict[str, int] = {}
        paid_to: dict[tuple[str, str], int] = {}
        for item in self.session.scan(
            FilterExpression="#e = :t AND (begins_with(debit_account, :c) OR begins_with(credit_account, :c))",
            ExpressionAttributeNames={"#e": ENTITY},
            ExpressionAttributeValues={":t": "transfer", ":c": CAMPAIGN_ACCOUNT_PREFIX},
        ):
            amount = int(item["amount"])
            for account, sign in ((str(item["debit_account"]), 1), (str(item["credit_account"]), -1)):
                if account.startswith(CAMPAIGN_ACCOUNT_PREFIX):
                    paid[account] = paid.get(account, 0) + sign * amount
                    member = (account, str(item["member_id"]))
                    paid_to[member] = paid_to.get(member, 0) + sign * amount
        problems: list[str] = []
        for campaign in campaigns:
            account = campaign.budget_account
            total, per_member = campaign.budget.total_points, campaign.budget.per_member_points
            drawn = paid.get(account, 0)
            if total is not None and drawn > total:
                problems.append(f"campaign {campaign.campaign_id}: paid {drawn} points, over its budget of {total}")
            if per_member is not None:
                for (paid_account, member_id), amount in sorted(paid_to.items()):
                    if paid_account == account and amount > per_member:
                        problems.append(
                            f"campaign {campaign.campaign_id}: paid member {member_id} "
                            f"{amount} points, over its per-member budget of {per_member}"
                        )
        return problems

    def list(self, limit: int, cursor: str | None) -> Page[Campaign]:
        items, next_cursor = page(
            self.session,
            index=GSI1.name,
            partition=str(keys.Prefix.CAMPAIGNS),
            sort_prefix="",
            limit=limit,
            cursor=cursor,
        )
        return Page([codec.from_attributes(Campaign, i) for i in items], next_cursor)
