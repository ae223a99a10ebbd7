"""Campaigns: declarative reward rules (admin), with what each has awarded and has left to award."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Depends, Path, Query, Request
from pydantic import Field

from accrue.bootstrap import Application
from accrue.domain.campaigns import Campaign, CampaignType, CreateCampaign, EndCampaign
from accrue.domain.errors import InvalidInput
from accrue.entrypoints.api.routing import application, router
from accrue.entrypoints.api.schemas import ApiModel, Envelope, ResponseModel, ok
from accrue.entrypoints.api.security import Admin, Writer
from accrue.service_layer.campaigns import CampaignView, campaign_schema, get_campaign, list_campaigns

api = router(tags=["campaigns"])
App = Annotated[Application, Depends(application)]
CampaignIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_]+$", alias="campaignId")]
Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Status = Literal["scheduled", "active", "ended"]


def _inline_definitions(schema: dict[str, Any]) -> dict[str, Any]:
    """The campaign schema for the OpenAPI document: ``$ref``s to local ``$defs`` inlined (a
    ``#/$defs/...`` pointer would resolve against the OpenAPI document, not the schema)."""
    definitions = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(copy.deepcopy(definitions[ref.removeprefix("#/$defs/")]))
            return {k: walk(v) for k, v in node.items() if k not in ("$defs", "$schema", "$id")}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    inlined: dict[str, Any] = walk(schema)
    return inlined


def _refuse_constant(name: str) -> Any:
    raise InvalidInput("body", f"{name} is not a JSON number")


async def campaign_document(request: Request) -> Any:
    """The raw JSON body with numbers as ``Decimal`` (never binary floats): the campaign schema,
    not a pydantic model, is the single definition of what a campaign document may hold."""
    raw = await request.body()
    try:
        return json.loads(raw, parse_float=Decimal, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidInput("body", "is not valid JSON") from None


class CampaignCreatedOut(ResponseModel):
    campaign_id: str
    status: Status


class ConditionsOut(ResponseModel):
    min_amount: str | None = Field(default=None, description="Decimal string, in `currency`")
    currency: str
    categories: list[str]
    tiers: list[str]
    first_order_only: bool
    milestones: list[int]


class BudgetOut(ResponseModel):
    total_points: int | None = None
    per_member_points: int | None = None


class CampaignOut(ResponseModel):
    campaign_id: str
    name: str
    description: str
    type: str
    status: Status
    points: int | None = Field(default=None, description="Fixed points (every type but purchase_multiplier)")
    multiplier: str | None = Field(default=None, description="Decimal string (purchase_multiplier)")
    conditions: ConditionsOut
    start_date: datetime | None = None
    end_date: datetime | None = None
    ended_at: datetime | None = Field(default=None, description="When it was ended early")
    priority: int
    exclusive: bool
    budget: BudgetOut
    points_awarded: int = Field(description="Net points paid from the campaign's budget account (ledger)")
    budget_remaining: int | None = Field(description="null when the campaign has no total budget")
    managed_by_configuration: bool
    created_at: datetime


class CampaignPage(ResponseModel):
    campaigns: list[CampaignOut]
    next_cursor: str | None = None


class CampaignPatch(ApiModel):
    status: Literal["ended"] = Field(description="`ended` ends the campaign now; ending twice changes nothing")


def present(view: CampaignView) -> CampaignOut:
    c: Campaign = view.campaign
    cond = c.conditions
    return CampaignOut(
        campaign_id=c.campaign_id,
        name=c.name,
        description=c.description,
        type=str(c.type),
        status=view.status.value,
        points=c.points or None,
        multiplier=str(c.multiplier) if c.type is CampaignType.PURCHASE_MULTIPLIER else None,
        conditions=ConditionsOut(
            min_amount=None if cond.min_amount is None else str(cond.min_amount),
            currency=cond.currency,
            categories=sorted(cond.categories),
            tiers=sorted(str(t) for t in cond.tiers),
            first_order_only=cond.first_order_only,
            milestones=sorted(cond.milestones),
        ),
        start_date=c.starts_at,
        end_date=c.ends_at,
        ended_at=c.ended_at,
        priority=c.priority,
        exclusive=c.exclusive,
        budget=BudgetOut(total_points=c.budget.total_points, per_member_points=c.budget.per_member_points),
        points_awarded=view.points_awarded,
        budget_remaining=view.budget_remaining,
        managed_by_configuration=c.managed,
        created_at=c.created_at,
    )


@api.post(
    "/campaigns",
    status_code=201,
    response_model=Envelope[CampaignCreatedOut],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline_definitions(campaign_schema())}},
        }
    },
)
def create_campaign(
    document: Annotated[Any, Depends(campaign_document)], app: App, principal: Admin
) -> dict[str, object]:
    """Define a campaign (seed 003 shape). Its status follows from its dates."""
    campaign: Campaign = app.bus.handle(CreateCampaign(definition=document))
    return ok(CampaignCreatedOut(campaign_id=campaign.campaign_id, status=campaign.status(app.clock()).value))


@api.get("/campaigns", response_model=Envelope[CampaignPage])
def list_all(app: App, principal: Writer, limit: Limit = 20, cursor: Cursor = None) -> dict[str, object]:
    """Newest first; the configured welcome bonus campaign heads the first page."""
    welcome = app.settings.welcome_bonus_points
    page = app.bus.query(lambda uow: list_campaigns(uow, limit, cursor, app.clock(), welcome))
    return ok(CampaignPage(campaigns=[present(v) for v in page.items], next_cursor=page.next_cursor))


@api.get("/campaigns/{campaignId}", response_model=Envelope[CampaignOut])
def get_one(campaign_id: CampaignIdPath, app: App, principal: Writer) -> dict[str, object]:
    welcome = app.settings.welcome_bonus_points
    return ok(present(app.bus.query(lambda uow: get_campaign(uow, campaign_id, app.clock(), welcome))))


@api.patch("/campaigns/{campaignId}", response_model=Envelope[CampaignOut])
def end_early(campaign_id: CampaignIdPath, body: CampaignPatch, app: App, principal: Admin) -> dict[str, object]:
    """End a campaign now (`{"status": "ended"}`); facts that happened before still count."""
    app.bus.handle(EndCampaign(campaign_id=campaign_id))
    welcome = app.settings.welcome_bonus_points
    return ok(present(app.bus.query(lambda uow: get_campaign(uow, campaign_id, app.clock(), welcome))))
