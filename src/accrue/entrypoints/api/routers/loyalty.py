"""Members, transactions, orders, points and notifications."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query
from starlette.responses import Response

from accrue.bootstrap import Application
from accrue.domain import commands
from accrue.domain.errors import NotFound
from accrue.domain.members import Member
from accrue.domain.orders import Order
from accrue.entrypoints.api import presenters, schemas
from accrue.entrypoints.api.routing import application, router
from accrue.entrypoints.api.schemas import Envelope, ok_json
from accrue.entrypoints.api.security import AdminOrMember, Principal, Reader, Role, Writer
from accrue.entrypoints.api.writes import Handle, run_op
from accrue.service_layer.handlers import RedeemResult, TransactionResult

api = router()
App = Annotated[Application, Depends(application)]
UserIdPath = Annotated[str, Path(min_length=1, max_length=128, pattern=schemas.ID_PATTERN, alias="userId")]
Limit = Annotated[int, Query(ge=1, le=100)]
# The nextCursor of the previous page (an opaque token in the base64url alphabet).
Cursor = Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
UserIdQuery = Annotated[str | None, Query(alias="userId", min_length=1, max_length=128, pattern=schemas.ID_PATTERN)]


def _visible_member(app: Application, principal: Principal, user_id: str) -> Member:
    """A member the caller may see; another member's data is 'not found', never 'forbidden'."""
    member: Member | None = app.bus.query(lambda uow: uow.members.get(user_id)) if principal.can_see(user_id) else None
    if member is None or member.erased:
        raise NotFound(f"user {user_id} not found")
    return member


@api.post("/users", status_code=201, response_model=Envelope[schemas.UserCreated], tags=["users"])
async def create_user(body: schemas.CreateUserRequest, app: App, principal: Writer) -> Response:
    command = commands.CreateMember(email=str(body.email), name=body.name, phone=body.phone, user_id=body.user_id)
    member: Member = await run_op(app, Handle(command))
    return ok_json(
        schemas.UserCreated(
            user_id=member.user_id,
            email=member.email,
            points=member.balance,
            tier=str(member.tier),
            referral_code=member.referral_code or None,
            created_at=member.created_at,
        ),
        status_code=201,
    )


@api.get("/users/{userId}", response_model=Envelope[schemas.User], tags=["users"])
def get_user(user_id: UserIdPath, app: App, principal: Reader) -> Response:
    return ok_json(presenters.user(_visible_member(app, principal, user_id)))


@api.post("/transactions", response_model=Envelope[schemas.TransactionResponse], tags=["points"])
async def post_transaction(body: schemas.TransactionRequest, app: App, principal: Writer) -> Response:
    command = commands.RecordTransaction(
        member_id=body.member_id,
        amount=body.transaction_amount,
        transaction_type=body.transaction_type,
        email=str(body.email) if body.email else None,
    )
    result: TransactionResult = await run_op(app, Handle(command))
    return ok_json(
        schemas.TransactionResponse(
            transaction_id=result.transaction_id,
            points_earned=result.points_earned,
            total_points=result.total_points,
            tier=str(result.tier),
        )
    )


@api.post("/orders", status_code=201, response_model=Envelope[schemas.OrderOut], tags=["orders"])
async def create_order(body: schemas.CreateOrderRequest, app: App, principal: Writer) -> Response:
    command = commands.CreateOrder(
        user_id=body.user_id,
        amount=body.amount,
        currency=body.currency,
        order_id=body.order_id,
        items=tuple(
            commands.OrderItem(sku=i.sku, quantity=i.quantity, price=i.price, category=i.category) for i in body.items
        ),
    )
    order: Order = await run_op(app, Handle(command))
    return ok_json(presenters.order(order), status_code=201)


@api.get("/orders", response_model=Envelope[schemas.OrderPage], tags=["orders"])
def list_orders(
    app: App,
    principal: Reader,
    user_id: UserIdQuery = None,
    status: Annotated[str | None, Query(min_length=1, max_length=32, pattern=r"^[a-z_]+$")] = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Response:
    if principal.role is Role.MEMBER:
        if user_id is not None and user_id != principal.sub:
            raise NotFound(f"user {user_id} not found")
        user_id = principal.sub
    page = app.bus.query(lambda uow: uow.orders.list(user_id, status, limit, cursor))
    return ok_json(schemas.OrderPage(orders=[presenters.order(o) for o in page.items], next_cursor=page.next_cursor))


@api.get("/points/{userId}", response_model=Envelope[schemas.PointsOut], tags=["points"])
def get_points(user_id: UserIdPath, app: App, principal: Reader) -> Response:
    member = _visible_member(app, principal, user_id)
    return ok_json(
        schemas.PointsOut(
            user_id=member.user_id,
            balance=member.balance,
            lifetime=member.lifetime,
            tier=str(member.tier),
        )
    )


@api.get("/points/{userId}/history", response_model=Envelope[schemas.HistoryPage], tags=["points"])
def get_history(user_id: UserIdPath, app: App, principal: Reader, limit: Limit = 20, cursor: Cursor = None) -> Response:
    _visible_member(app, principal, user_id)
    page = app.bus.query(lambda uow: uow.ledger.history(user_id, limit, cursor))
    return ok_json(
        schemas.HistoryPage(
            user_id=user_id,
            history=[presenters.history_entry(t) for t in page.items],
            next_cursor=page.next_cursor,
        )
    )


@api.post("/points/{userId}/redeem", response_model=Envelope[schemas.RedeemResponse], tags=["points"])
async def redeem(user_id: UserIdPath, body: schemas.RedeemRequest, app: App, principal: AdminOrMember) -> Response:
    if not principal.can_see(user_id):  # the same answer as for a member that does not exist
        raise NotFound(f"user {user_id} not found", details={"field": "userId"})
    command = commands.RedeemPoints(user_id=user_id, points=body.points, reason=body.reason)
    result: RedeemResult = await run_op(app, Handle(command))
    return ok_json(
        schemas.RedeemResponse(
            transaction_id=result.transaction_id,
            points_redeemed=result.points_redeemed,
            balance=result.balance,
        )
    )


@api.get("/notifications", response_model=Envelope[schemas.NotificationPage], tags=["notifications"])
def list_notifications(
    app: App,
    principal: Reader,
    user_id: UserIdQuery = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    if principal.role is Role.MEMBER:
        if user_id is not None and user_id != principal.sub:
            raise NotFound(f"user {user_id} not found")
        user_id = principal.sub
    page = app.bus.query(lambda uow: uow.notifications.list(user_id, limit, cursor))
    return ok_json(
        schemas.NotificationPage(
            notifications=[presenters.notification(n) for n in page.items],
            next_cursor=page.next_cursor,
        )
    )
