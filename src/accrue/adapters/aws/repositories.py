"""DynamoDB repositories of the loyalty core (single table; keys from ``keys.py``).

Reads are strongly consistent on the base table; listings read a global index (eventually
consistent, usually within a second). Writes are staged in the unit of work's session and leave
together on commit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from accrue.adapters.aws import codec, keys
from accrue.adapters.aws.dynamodb_uow import (
    DELIVERED_MESSAGE_TTL,
    SHARED_GROUP,
    Session,
    Write,
    outbox_message_id,
)
from accrue.adapters.aws.table import GSI1, GSI2, PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE
from accrue.domain.errors import ConcurrencyConflict, Conflict
from accrue.domain.ledger import Transfer
from accrue.domain.members import Member, normalize_email
from accrue.domain.notifications import Notification
from accrue.domain.orders import Order
from accrue.domain.referrals import email_identity
from accrue.ports import (
    ImportRepository,
    LedgerRepository,
    MemberRepository,
    NotificationRepository,
    OrderRepository,
    OutboxMessage,
    OutboxRepository,
    Page,
    ScheduleRunRepository,
)

ENTITY = "entity"
ORDER_COUNT = "order_count"
# Counters kept on the member item from enrolment (never a missing attribute to add to).
MEMBER_COUNTERS = (ORDER_COUNT, "referral_count", "referral_rewards_cents")
EMAIL_KEY = "email_key"


# ``page(index=BASE_TABLE)``: one partition of the table itself, read consistently.
BASE_TABLE = ""


def member_group(user_id: str) -> str:
    return f"member:{user_id}"


def page(
    session: Session,
    *,
    index: str,
    partition: str,
    sort_prefix: str,
    limit: int,
    cursor: str | None,
    newest_first: bool = True,
    keep: Callable[[dict[str, Any]], bool] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``limit`` items of one index partition whose sort key starts with ``sort_prefix``, and
    a cursor when more exist.

    The cursor is the rest of the last returned item's sort key (index sort keys are unique within a
    partition), so it stays short and a filter (``keep``) never skips or repeats an item.
    """
    pk_name, sk_name = {
        GSI1.name: (GSI1.partition_key, GSI1.sort_key),
        GSI2.name: (GSI2.partition_key, GSI2.sort_key),
        BASE_TABLE: (PARTITION_KEY, SORT_KEY),
    }[index]
    position = codec.decode_cursor(cursor)
    names = {"#pk": pk_name, "#sk": sk_name}
    values: dict[str, Any] = {":pk": partition}
    after: str | None = None
    if position is None:
        if sort_prefix:
            condition = "#pk = :pk AND begins_with(#sk, :prefix)"
            values[":prefix"] = sort_prefix
        else:
            condition = "#pk = :pk"
            del names["#sk"]
    elif not position and newest_first:
        return [], None  # nothing sorts before the empty position
    elif not position:
        return page(
            session,
            index=index,
            partition=partition,
            sort_prefix=sort_prefix,
            limit=limit,
            cursor=None,
            newest_first=newest_first,
            keep=keep,
        )
    else:
        after = sort_prefix + position
        # Inclusive bounds: the item at the cursor itself is dropped below.
        if newest_first and sort_prefix:
            condition = "#pk = :pk AND #sk BETWEEN :low AND :high"
            values.update({":low": sort_prefix, ":high": after})
        elif newest_first:
            condition = "#pk = :pk AND #sk <= :high"
            values[":high"] = after
        elif sort_prefix:
            # The smallest string above every key with the prefix: its last character plus one.
            ceiling = sort_prefix[:-1] + chr(ord(sort_prefix[-1]) + 1)
            condition = "#pk = :pk AND #sk BETWEEN :low AND :high"
            values.update({":low": after, ":high": ceiling})
        else:
            condition = "#pk = :pk AND #sk >= :low"
            values[":low"] = after
        if ":low" in values and ":high" in values and values[":high"] < values[":low"]:
            return [], None
    request: dict[str, Any] = {
        "KeyConditionExpression": condition,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
        "ScanIndexForward": not newest_first,
        "Limit": max(limit + 2, 25) if keep else limit + 2,
    }
    if index != BASE_TABLE:
        request["IndexName"] = index
    found: list[dict[str, Any]] = []
    for items, _last in session.query(**request):
        found.extend(i for i in items if i[sk_name] != after and (keep is None or keep(i)))
        if len(found) > limit:
            break
    next_cursor = None
    if len(found) > limit:
        next_cursor = codec.encode_cursor(str(found[limit - 1][sk_name])[len(sort_prefix) :])
    return found[:limit], next_cursor


def member_or_all_page(
    session: Session,
    user_id: str | None,
    member_prefix: keys.Prefix,
    all_partition: keys.Prefix,
    limit: int,
    cursor: str | None,
    keep: Callable[[dict[str, Any]], bool] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One member's items of a kind (GSI1, the member's partition) or everyone's (GSI2), newest first."""
    if user_id is not None:
        return page(
            session,
            index=GSI1.name,
            partition=keys.member_partition(user_id),
            sort_prefix=keys.join(member_prefix, ""),
            limit=limit,
            cursor=cursor,
            keep=keep,
        )
    return page(
        session, index=GSI2.name, partition=str(all_partition), sort_prefix="", limit=limit, cursor=cursor, keep=keep
    )


# -- members ----------------------------------------------------------------------------------

MEMBER_ENTITY = "member"


def member_from_item(item: dict[str, Any]) -> Member:
    return codec.from_attributes(Member, item)


class DynamoMemberRepository(MemberRepository):
    def __init__(self, session: Session) -> None:
        self.session = session

    def _raw(self, user_id: str) -> dict[str, Any] | None:
        key = keys.member(user_id)
        return self.session.loaded.get((key[PARTITION_KEY], key[SORT_KEY])) or self.session.get(key)

    def _item(self, member: Member, raw: dict[str, Any] | None) -> dict[str, Any]:
        email_key = normalize_email(member.email) if member.email and not member.erased else None
        item = {k: v for k, v in (raw or {}).items() if k not in (PARTITION_KEY, SORT_KEY)}
        # Fields the domain cleared (an erased phone) must disappear, not linger from ``raw``.
        for name in ("email", "name", "phone", EMAIL_KEY):
            item.pop(name, None)
        item.update(codec.to_attributes(member))
        item[ENTITY] = MEMBER_ENTITY
        for counter in MEMBER_COUNTERS:
            item.setdefault(counter, 0)
        item.pop(GSI1.partition_key, None)
        item.pop(GSI1.sort_key, None)
        if email_key:
            item[EMAIL_KEY] = email_key
            item.update(keys.email_identity_listing(email_identity(email_key), member.user_id))
        item.update(keys.member_listing(member.user_id))
        return item

    def add(self, member: Member) -> None:
        group = member_group(member.user_id)
        key = keys.member(member.user_id)
        if self.session.staged(key) is not None:
            raise Conflict("a member with this userId already exists", details={"field": "userId"})
        item = self._item(member, None)
        self.session.stage(
            Write.insert(
                key,
                item,
                group=group,
                conflict=lambda: Conflict("a member with this userId already exists", details={"field": "userId"}),
            )
        )
        self.session.loaded[(key[PARTITION_KEY], key[SORT_KEY])] = {**item, **key, "_new": True}
        if item.get(EMAIL_KEY):
            self._claim_email(item[EMAIL_KEY], member.user_id, group)
        if member.referral_code:
            self.session.stage(
                Write.insert(
                    keys.referral_code(member.referral_code),
                    {"user_id": member.user_id, ENTITY: "referral_code"},
                    group=group,
                    conflict=lambda: Conflict("referral code collision", details={"field": "referralCode"}),
                )
            )
        self._stage_transfers(member, member.version, group)

    def _claim_email(self, email_key: str, user_id: str, group: str) -> None:
        key = keys.email(email_key)
        staged = self.session.staged(key)
        if staged is not None and staged.item is not None and staged.item.get("user_id") != user_id:
            raise Conflict("a member with this email already exists", details={"field": "email"})
        self.session.stage(
            Write.insert(
                keys.email(email_key),
                {"user_id": user_id, ENTITY: "email"},
                group=group,
                conflict=lambda: Conflict("a member with this email already exists", details={"field": "email"}),
            ),
            replace=True,
        )

    def get(self, user_id: str) -> Member | None:
        item = self.session.get(keys.member(user_id))
        return member_from_item(item) if item else None

    def _by_guard(self, guard: keys.Key) -> Member | None:
        claim = self.session.get(guard)
        if claim is None:
            return None
        return self.get(str(claim["user_id"]))

    def get_by_email(self, email: str) -> Member | None:
        return self._by_guard(keys.email(normalize_email(email)))

    def get_by_referral_code(self, code: str) -> Member | None:
        return self._by_guard(keys.referral_code(code.strip().upper()))

    def get_many(self, user_ids: Sequence[str]) -> list[Member]:
        items = self.session.batch_get([keys.member(u) for u in user_ids])
        return [member_from_item(i) for i in items]

    def save(self, member: Member) -> None:
        key = keys.member(member.user_id)
        group = member_group(member.user_id)
        raw = self._raw(member.user_id)
        if raw is None:
            raise ConcurrencyConflict(f"member {member.user_id} changed concurrently; retry")
        staged = self.session.staged(key)
        if staged is not None and staged.item is not None and staged.item.get("version") != member.version:
            # Two copies of one member saved in one unit of work: the second one is stale.
            raise ConcurrencyConflict(f"member {member.user_id} changed concurrently; retry")
        if staged is None and int(raw["version"]) != member.version:
            raise ConcurrencyConflict(f"member {member.user_id} changed concurrently; retry")
        is_new = bool(raw.get("_new"))
        member.version += 1
        item = self._item(member, {k: v for k, v in raw.items() if k != "_new"})
        if staged is not None:
            # Saved (or added) before in this unit of work: one write carries the final state,
            # guarded by the condition of the first one (the state in the table).
            staged.item = item
        else:
            expected = int(raw["version"])
            self.session.stage(
                Write(
                    "Put",
                    key,
                    item=item,
                    condition="version = :expected",
                    values={":expected": expected},
                    group=group,
                    conflict=lambda: ConcurrencyConflict(f"member {member.user_id} changed concurrently; retry"),
                )
            )
        self.session.loaded[(key[PARTITION_KEY], key[SORT_KEY])] = {**item, **key, **({"_new": True} if is_new else {})}
        old_email = raw.get(EMAIL_KEY)
        new_email = item.get(EMAIL_KEY)
        if old_email != new_email:
            old_key = keys.email(str(old_email)) if old_email else None
            if old_key is not None and is_new:
                self.session.writes.pop((old_key[PARTITION_KEY], old_key[SORT_KEY]), None)
            elif old_key is not None:
                self.session.stage(
                    Write("Delete", old_key, condition="user_id = :uid", values={":uid": member.user_id}, group=group),
                    replace=True,
                )
            if new_email:
                self._claim_email(str(new_email), member.user_id, group)
        self._stage_transfers(member, member.version, group)

    def _stage_transfers(self, member: Member, version_after: int, group: str) -> None:
        for index, transfer in enumerate(member.new_transfers):
            stage_transfer(self.session, transfer, version_after, index, group)
        # Staged once: a second save in this unit of work must not post them again.
        member.new_transfers.clear()

    def iter_ids(self, batch_size: int = 500) -> Iterator[str]:
        for shard in range(keys.MEMBER_SHARDS):
            for items, _ in self.session.query(
                IndexName=GSI2.name,
                KeyConditionExpression="#pk = :pk",
                ExpressionAttributeNames={"#pk": GSI2.partition_key, "#sk": GSI2.sort_key},
                ExpressionAttributeValues={":pk": keys.members_shard_partition(shard)},
                ProjectionExpression="#sk",
                Limit=batch_size,
            ):
                for item in items:
                    yield str(item[GSI2.sort_key])


def stage_transfer(session: Session, transfer: Transfer, version_after: int, index: int, group: str) -> None:
    key = keys.transfer(transfer.transfer_id)
    if session.staged(key) is not None:
        raise Conflict("a transfer with this id was already posted", details={"transferId": transfer.transfer_id})
    item = codec.to_attributes(transfer)
    item[ENTITY] = "transfer"
    item.update(keys.transfer_history(transfer.member_id, version_after, index))
    session.stage(
        Write.insert(
            key,
            item,
            group=group,
            conflict=lambda: Conflict(
                "a transfer with this id was already posted", details={"transferId": transfer.transfer_id}
            ),
        )
    )
    from accrue.adapters.aws.campaigns import stage_account_totals  # the campaigns module imports this one

    stage_account_totals(session, transfer, group)


# -- ledger -----------------------------------------------------------------------------------


class DynamoLedgerRepository(LedgerRepository):
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, transfer_id: str) -> Transfer | None:
        item = self.session.get(keys.transfer(transfer_id))
        return codec.from_attributes(Transfer, item) if item else None

    def history(self, member_id: str, limit: int, cursor: str | None) -> Page[Transfer]:
        items, next_cursor = page(
            self.session,
            index=GSI1.name,
            partition=keys.member_partition(member_id),
            sort_prefix=keys.join(keys.Prefix.TRANSFER, ""),
            limit=limit,
            cursor=cursor,
        )
        return Page([codec.from_attributes(Transfer, i) for i in items], next_cursor)

    def existing_ids(self, transfer_ids: Sequence[str]) -> set[str]:
        items = self.session.batch_get([keys.transfer(t) for t in transfer_ids], projection=("transfer_id",))
        return {str(i["transfer_id"]) for i in items}

    def append_many(self, transfers: Sequence[Transfer]) -> None:
        """Post transfers that no member aggregate carries: each member's version moves on by one,
        so the history order and the version guard of a concurrent save both stay right."""
        by_member: dict[str, list[Transfer]] = {}
        for transfer in transfers:
            by_member.setdefault(transfer.member_id, []).append(transfer)
        for member_id, posted in by_member.items():
            key = keys.member(member_id)
            if self.session.staged(key) is not None:
                raise RuntimeError("append_many cannot post for a member saved in the same unit of work")
            raw = self.session.get(key, projection=("version",))
            if raw is None:
                raise Conflict(f"no member {member_id} for these transfers", details={"field": "memberId"})
            version = int(raw["version"])
            group = member_group(member_id)
            self.session.stage(
                Write(
                    "Update",
                    key,
                    update="SET version = :next",
                    condition="version = :expected",
                    values={":next": version + 1, ":expected": version},
                    group=group,
                )
            )
            for index, transfer in enumerate(posted):
                stage_transfer(self.session, transfer, version + 1, index, group)

    def check(self) -> list[str]:
        problems: list[str] = []
        members: dict[str, int] = {}
        posted: dict[str, int] = {}
        last: dict[str, tuple[str, int]] = {}
        accounts: dict[str, int] = {}
        for item in self.session.scan(
            FilterExpression="#e IN (:m, :t)",
            ExpressionAttributeNames={"#e": ENTITY},
            ExpressionAttributeValues={":m": MEMBER_ENTITY, ":t": "transfer"},
        ):
            if item[ENTITY] == MEMBER_ENTITY:
                members[str(item["user_id"])] = int(item["balance"])
                continue
            amount = int(item["amount"])
            member_id = str(item["member_id"])
            posted[member_id] = posted.get(member_id, 0) + int(item["member_delta"])
            order = str(item[GSI1.sort_key])
            if member_id not in last or order > last[member_id][0]:
                last[member_id] = (order, int(item["balance_after"]))
            accounts[str(item["credit_account"])] = accounts.get(str(item["credit_account"]), 0) + amount
            accounts[str(item["debit_account"])] = accounts.get(str(item["debit_account"]), 0) - amount
        for user_id, balance in sorted(members.items()):
            total = posted.get(user_id, 0)
            if balance != total:
                problems.append(f"member {user_id}: stored balance {balance} != sum of postings {total}")
            last_balance = last.get(user_id, ("", 0))[1]
            if balance != last_balance:
                problems.append(f"member {user_id}: stored balance {balance} != last resulting balance {last_balance}")
        if sum(accounts.values()) != 0:
            problems.append("the ledger does not balance: accounts do not sum to zero")
        for account, balance in sorted(accounts.items()):
            if account.startswith("member:") and balance < 0:
                problems.append(f"account {account} is negative ({balance})")
        return problems


# -- orders -----------------------------------------------------------------------------------


class DynamoOrderRepository(OrderRepository):
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, order: Order) -> None:
        key = keys.order(order.order_id)
        if self.session.staged(key) is not None:
            raise Conflict("an order with this orderId already exists", details={"field": "orderId"})
        item = codec.to_attributes(order)
        item[ENTITY] = "order"
        item.update(keys.order_indexes(order.user_id, order.created_at, order.order_id))
        group = member_group(order.user_id)
        self.session.stage(
            Write.insert(
                key,
                item,
                group=group,
                conflict=lambda: Conflict("an order with this orderId already exists", details={"field": "orderId"}),
            )
        )
        # The member counts its orders, so "is this the first order?" is one consistent read.
        self.session.add_to(keys.member(order.user_id), ORDER_COUNT, 1, group)

    def get(self, order_id: str) -> Order | None:
        item = self.session.get(keys.order(order_id))
        return codec.from_attributes(Order, item) if item else None

    def list(self, user_id: str | None, status: str | None, limit: int, cursor: str | None) -> Page[Order]:
        keep = (lambda i: i.get("status") == status) if status is not None else None
        items, next_cursor = member_or_all_page(
            self.session, user_id, keys.Prefix.ORDER, keys.Prefix.ORDERS, limit, cursor, keep
        )
        return Page([codec.from_attributes(Order, i) for i in items], next_cursor)

    def count_for_user(self, user_id: str) -> int:
        key = keys.member(user_id)
        raw = self.session.loaded.get((key[PARTITION_KEY], key[SORT_KEY]))
        if raw is None:
            raw = self.session.get(key, projection=(ORDER_COUNT,)) or {}
        return int(raw.get(ORDER_COUNT, 0)) + self.session.pending_delta(key, ORDER_COUNT)


# -- notifications ----------------------------------------------------------------------------


class DynamoNotificationRepository(NotificationRepository):
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, notification: Notification, dedupe_key: str, *, queue: bool = True) -> bool:
        key = keys.notification(dedupe_key)
        if self.session.staged(key) is not None or self.session.get(key, projection=(PARTITION_KEY,)) is not None:
            return False
        item = codec.to_attributes(notification)
        item[ENTITY] = "notification"
        item["dedupe_key"] = dedupe_key
        item.update(keys.notification_indexes(notification.user_id, notification.notification_id))
        self.session.stage(
            Write.insert(
                key,
                item,
                group=member_group(notification.user_id),
                conflict=lambda: ConcurrencyConflict("this notification was stored concurrently; retry"),
            )
        )
        if queue:
            from accrue.adapters.aws.notification_channels import stage_queued_notification  # imports this module

            stage_queued_notification(self.session, notification, dedupe_key)
        else:
            self.session.unqueued_notifications[notification.notification_id] = item
        return True

    def list(self, user_id: str | None, limit: int, cursor: str | None) -> Page[Notification]:
        items, next_cursor = member_or_all_page(
            self.session, user_id, keys.Prefix.NOTIFICATION, keys.Prefix.NOTIFICATIONS, limit, cursor
        )
        return Page([codec.from_attributes(Notification, i) for i in items], next_cursor)


# -- imports and schedules --------------------------------------------------------------------


class DynamoImportRepository(ImportRepository):
    def __init__(self, session: Session) -> None:
        self.session = session

    def _current(self, file_sha256: str) -> dict[str, Any] | None:
        key = keys.point_import(file_sha256)
        staged = self.session.staged(key)
        if staged is not None and staged.item is not None:
            return staged.item
        return self.session.get(key)

    def start(self, file_sha256: str, file_name: str, now: datetime) -> tuple[str, int]:
        current = self._current(file_sha256)
        if current is not None:
            return str(current["status"]), int(current["rows_done"])
        item = {
            ENTITY: "import",
            "file_sha256": file_sha256,
            "file_name": file_name,
            "status": "running",
            "rows_done": 0,
            "rows_awarded": 0,
            "rows_skipped": 0,
            "started_at": keys.sortable_time(now),
        }
        self.session.stage(
            Write.insert(
                keys.point_import(file_sha256),
                item,
                conflict=lambda: ConcurrencyConflict("this import was started concurrently; retry"),
            )
        )
        return "running", 0

    def _replace(self, file_sha256: str, changes: Callable[[dict[str, Any]], None]) -> None:
        key = keys.point_import(file_sha256)
        current = self._current(file_sha256)
        if current is None:
            raise Conflict(f"no import {file_sha256}", details={"field": "file"})
        staged = self.session.staged(key)
        item = {k: v for k, v in current.items() if k not in (PARTITION_KEY, SORT_KEY)}
        changes(item)
        if staged is not None:
            staged.item = item
            return
        self.session.stage(
            Write(
                "Put",
                key,
                item=item,
                # Progress moves forward only from the state this unit of work read.
                condition="rows_done = :seen AND rows_awarded = :awarded",
                values={":seen": int(current["rows_done"]), ":awarded": int(current["rows_awarded"])},
                conflict=lambda: ConcurrencyConflict("this import progressed concurrently; retry"),
            )
        )

    def record_progress(self, file_sha256: str, last_line: int, awarded: int, skipped: int, now: datetime) -> None:
        def apply(item: dict[str, Any]) -> None:
            item["rows_done"] = max(int(item["rows_done"]), last_line)
            item["rows_awarded"] = int(item["rows_awarded"]) + awarded
            item["rows_skipped"] = int(item["rows_skipped"]) + skipped

        self._replace(file_sha256, apply)

    def lines_done(self, file_sha256: str) -> int | None:
        """Unknown on purpose: a large chunk may commit here in several transactions (one per member
        group), so rows past the recorded progress can already be posted; every row is checked."""
        return None

    def finish(self, file_sha256: str, now: datetime) -> None:
        def apply(item: dict[str, Any]) -> None:
            item["status"] = "completed"
            item["finished_at"] = keys.sortable_time(now)

        self._replace(file_sha256, apply)


class DynamoScheduleRunRepository(ScheduleRunRepository):
    def __init__(self, session: Session) -> None:
        self.session = session

    def last_fire(self, name: str) -> datetime | None:
        item = self.session.get(keys.schedule_run(name))
        if item is None:
            return None
        return datetime.fromisoformat(str(item["last_fire_at"]).replace("Z", "+00:00"))

    def record(self, name: str, fire_at: datetime, status: str, error: str | None) -> None:
        item: dict[str, Any] = {
            ENTITY: "schedule_run",
            "name": name,
            "last_fire_at": keys.sortable_time(fire_at),
            "last_status": status,
        }
        if error is not None:
            item["last_error"] = error
        self.session.stage(Write("Put", keys.schedule_run(name), item=item), replace=True)


# -- outbox -----------------------------------------------------------------------------------

PENDING, DONE, DEAD = "pending", "done", "dead"


def _message(item: dict[str, Any]) -> OutboxMessage:
    return OutboxMessage(
        message_id=int(item["message_id"]),
        event_id=str(item["event_id"]),
        event_name=str(item["event_name"]),
        handler=str(item["handler"]),
        payload=json.loads(str(item["payload"])),
        attempts=int(item["attempts"]),
        status=str(item["status"]),
        last_error=item.get("last_error"),
        created_at=datetime.fromisoformat(str(item["created_at"]).replace("Z", "+00:00")),
    )


def _due_key(moment: datetime, message_id: int) -> str:
    return keys.join(keys.sortable_time(moment), keys.sortable_number(message_id, 19))


class DynamoOutboxRepository(OutboxRepository):
    """One item per (event, subscriber). Pending and dead messages are listed on GSI2; the stream
    delivers new ones at once, the list serves retries, dead letters and the local worker."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def stage_new(
        self,
        message_id: int,
        event_id: str,
        event_name: str,
        handler: str,
        payload: str,
        now: datetime,
        *,
        group: str = SHARED_GROUP,
    ) -> None:
        item: dict[str, Any] = {
            ENTITY: "outbox",
            "message_id": message_id,
            "event_id": event_id,
            "event_name": event_name,
            "handler": handler,
            "payload": payload,
            "status": PENDING,
            "attempts": 0,
            "available_at": keys.sortable_time(now),
            "created_at": keys.sortable_time(now),
            "updated_at": keys.sortable_time(now),
            **keys.outbox_status(PENDING, _due_key(now, message_id)),
        }
        self.session.stage(Write("Put", keys.outbox_message(message_id), item=item, group=group), replace=True)

    def add(self, event_id: str, event_name: str, handler: str, payload: str, now: datetime) -> None:
        self.stage_new(outbox_message_id(event_id, handler), event_id, event_name, handler, payload, now)

    def due(self, now: datetime, limit: int) -> list[OutboxMessage]:
        return [_message(item) for item in self._due_items(now, limit)]

    def claim_due(self, now: datetime, limit: int, lease_seconds: float) -> list[OutboxMessage]:
        claimed: list[OutboxMessage] = []
        lease_until = datetime.fromtimestamp(now.timestamp() + lease_seconds, UTC)
        for item in self._due_items(now, limit):
            message_id = int(item["message_id"])
            self.session.stage(
                Write(
                    "Update",
                    keys.outbox_message(message_id),
                    update="SET available_at = :lease, #sk = :sk",
                    condition="#status = :pending AND available_at = :seen",
                    names={"#sk": GSI2.sort_key, "#status": "status"},
                    values={
                        ":lease": keys.sortable_time(lease_until),
                        ":sk": _due_key(lease_until, message_id),
                        ":pending": PENDING,
                        ":seen": item["available_at"],
                    },
                    conflict=lambda: ConcurrencyConflict("an outbox message was claimed concurrently; retry"),
                ),
                replace=True,
            )
            claimed.append(_message(item))
        return claimed

    def _due_items(self, now: datetime, limit: int) -> list[dict[str, Any]]:
        """Pending messages due at ``now``, confirmed by consistent reads, earliest due first."""
        candidates: list[dict[str, Any]] = []
        for items, _ in self.session.query(
            IndexName=GSI2.name,
            KeyConditionExpression="#pk = :pk AND #sk <= :due",
            ExpressionAttributeNames={"#pk": GSI2.partition_key, "#sk": GSI2.sort_key},
            ExpressionAttributeValues={
                ":pk": keys.outbox_status(PENDING, "")[GSI2.partition_key],
                ":due": keys.join(keys.sortable_time(now), "~"),
            },
            Limit=limit,
        ):
            candidates.extend(items)
            if len(candidates) >= limit:
                break
        # The index lags the table: confirm each candidate with a consistent read.
        fresh = self.session.batch_get([keys.outbox_message(int(c["message_id"])) for c in candidates[:limit]])
        return [
            item
            for item in sorted(fresh, key=lambda i: (str(i["available_at"]), int(i["message_id"])))
            if item["status"] == PENDING and str(item["available_at"]) <= keys.sortable_time(now)
        ]

    def get(self, message_id: int) -> OutboxMessage | None:
        item = self.session.get(keys.outbox_message(message_id))
        return _message(item) if item else None

    def mark_done(self, message_id: int) -> None:
        now = datetime.now(UTC)
        self.session.stage(
            Write(
                "Update",
                keys.outbox_message(message_id),
                update=(
                    "SET #status = :done, attempts = attempts + :one, updated_at = :now, #ttl = :expires "
                    "REMOVE last_error, #gpk, #gsk"
                ),
                # Exactly once: the handler's writes commit only if nobody finished this message first.
                condition="#status = :pending",
                names={"#status": "status", "#ttl": TTL_ATTRIBUTE, "#gpk": GSI2.partition_key, "#gsk": GSI2.sort_key},
                values={
                    ":done": DONE,
                    ":pending": PENDING,
                    ":one": 1,
                    ":now": keys.sortable_time(now),
                    ":expires": int((now + DELIVERED_MESSAGE_TTL).timestamp()),
                },
                conflict=lambda: ConcurrencyConflict(f"outbox message {message_id} was already handled"),
            ),
            replace=True,
        )

    def mark_failed(self, message_id: int, error: str, retry_at: datetime | None) -> None:
        now = datetime.now(UTC)
        values: dict[str, Any] = {":error": error[:2000], ":one": 1, ":now": keys.sortable_time(now)}
        if retry_at is None:
            update = "SET #status = :dead, attempts = attempts + :one, last_error = :error, updated_at = :now, "
            update += "#gpk = :gpk, #gsk = :gsk"
            key = keys.outbox_message(message_id)
            item = self.session.loaded.get((key[PARTITION_KEY], key[SORT_KEY])) or self.session.get(key)
            created = str(item["created_at"]) if item else keys.sortable_time(now)
            dead = keys.outbox_status(DEAD, keys.join(created, keys.sortable_number(message_id, 19)))
            values.update({":dead": DEAD, ":gpk": dead[GSI2.partition_key], ":gsk": dead[GSI2.sort_key]})
        else:
            update = "SET attempts = attempts + :one, last_error = :error, updated_at = :now, available_at = :at, "
            update += "#gsk = :gsk"
            values.update({":at": keys.sortable_time(retry_at), ":gsk": _due_key(retry_at, message_id)})
        names = {"#gsk": GSI2.sort_key, "#status": "status"}
        if retry_at is None:
            names["#gpk"] = GSI2.partition_key
        values[":pending"] = PENDING
        self.session.stage(
            Write(
                "Update",
                keys.outbox_message(message_id),
                update=update,
                # A message another delivery finished meanwhile keeps its outcome.
                condition="#status = :pending",
                names=names,
                values=values,
                conflict=lambda: ConcurrencyConflict(f"outbox message {message_id} was handled concurrently"),
            ),
            replace=True,
        )

    def dead_letters(self, limit: int) -> list[OutboxMessage]:
        items, _ = page(
            self.session,
            index=GSI2.name,
            partition=keys.outbox_status(DEAD, "")[GSI2.partition_key],
            sort_prefix="",
            limit=limit,
            cursor=None,
            newest_first=False,
        )
        fresh = self.session.batch_get([keys.outbox_message(int(i["message_id"])) for i in items])
        still_dead = {int(i["message_id"]): i for i in fresh if i["status"] == DEAD}
        return [_message(still_dead[int(i["message_id"])]) for i in items if int(i["message_id"]) in still_dead]

    def redrive(self, message_id: int, now: datetime) -> bool:
        current = self.session.get(keys.outbox_message(message_id))
        if current is None or current["status"] != DEAD:
            return False
        self.session.stage(
            Write(
                "Update",
                keys.outbox_message(message_id),
                update="SET #status = :pending, attempts = :zero, available_at = :now, updated_at = :now, "
                "#gpk = :gpk, #gsk = :gsk",
                condition="#status = :dead",
                names={"#status": "status", "#gpk": GSI2.partition_key, "#gsk": GSI2.sort_key},
                values={
                    ":pending": PENDING,
                    ":dead": DEAD,
                    ":zero": 0,
                    ":now": keys.sortable_time(now),
                    ":gpk": keys.outbox_status(PENDING, "")[GSI2.partition_key],
                    ":gsk": _due_key(now, message_id),
                },
                conflict=lambda: ConcurrencyConflict(f"outbox message {message_id} was redriven concurrently"),
            ),
            replace=True,
        )
        return True
