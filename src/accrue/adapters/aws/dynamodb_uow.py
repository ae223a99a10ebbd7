"""The DynamoDB unit of work: reads go straight to the table; writes are staged and leave on commit
as ONE ``TransactWriteItems`` request whose condition expressions are the guards (member versions,
``attribute_not_exists`` on transfer ids, order ids, e-mail and referral-code claims).

Outbox messages are items of that same transaction, so an event exists exactly when the change
that caused it does; they leave through the table's stream (``entrypoints/lambdas/stream.py``).

A commit over DynamoDB's limits (100 items, 4 MB) is split, but never inside a *group*: everything
one member's change writes (the member, its transfers, its events) travels in one transaction, so
a member's balance and its postings can never disagree. Only bulk work (imports, payout runs)
produces more than one transaction; it is idempotent by transfer id and picks up where it stopped.
A commit of a single item uses the plain conditional write (half the write units of a transaction).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError

from accrue.adapters.aws import codec, keys
from accrue.adapters.aws.table import PARTITION_KEY, SORT_KEY
from accrue.domain.errors import ConcurrencyConflict, Conflict
from accrue.domain.events import Event
from accrue.ports import UnitOfWork

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from accrue.adapters.aws import repositories as repos

MAX_TRANSACTION_ITEMS = 100
MAX_TRANSACTION_BYTES = 4 * 1024 * 1024
# Keep clear of the 4 MB request limit: our size estimate is of the items, not of the envelope.
TRANSACTION_BYTES_BUDGET = MAX_TRANSACTION_BYTES - 256 * 1024
SHARED_GROUP = "shared"
AUDIT_GROUP = "audit"
# Delivered outbox messages are kept a week (for inspection), then DynamoDB's TTL removes them.
DELIVERED_MESSAGE_TTL = timedelta(days=7)

Subscribers = Callable[[str], Sequence[str]]
# (handler name, event name, unit of work) -> whether the subscriber has anything to do now.
Interested = Callable[[str, str, UnitOfWork], bool]
ConflictFactory = Callable[[], Exception]
Action = Literal["Put", "Update", "Delete", "ConditionCheck"]


class TransactionTooLarge(Conflict):
    """One member's change needs more than one transaction can carry (100 items / 4 MB)."""


# The condition of a write that creates an item: no item with its key exists yet.
INSERT_CONDITION = f"attribute_not_exists({PARTITION_KEY})"


@dataclass
class Write:
    """One staged write. ``item`` for a Put; ``update`` for an Update; ``condition`` for any."""

    action: Action
    key: keys.Key
    item: dict[str, Any] | None = None
    update: str | None = None
    condition: str | None = None
    names: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    group: str = SHARED_GROUP
    # The domain error to raise when this write's condition fails.
    conflict: ConflictFactory | None = None

    @classmethod
    def insert(
        cls, key: keys.Key, item: dict[str, Any], *, conflict: ConflictFactory, group: str = SHARED_GROUP
    ) -> Write:
        """A Put of an item that must not exist yet: ``conflict`` is raised at commit if it does."""
        return cls("Put", key, item=item, condition=INSERT_CONDITION, group=group, conflict=conflict)

    @property
    def key_tuple(self) -> tuple[str, str]:
        return self.key[PARTITION_KEY], self.key[SORT_KEY]

    def request(self, table_name: str) -> dict[str, Any]:
        """The wire form: one element of ``TransactItems`` (also the arguments of a single write)."""
        body: dict[str, Any] = {"TableName": table_name}
        if self.action == "Put":
            assert self.item is not None
            body["Item"] = codec.serialize({**self.item, **self.key})
        else:
            body["Key"] = codec.serialize(self.key)
        if self.update is not None:
            body["UpdateExpression"] = self.update
        if self.condition is not None:
            body["ConditionExpression"] = self.condition
        if self.names:
            body["ExpressionAttributeNames"] = dict(self.names)
        if self.values:
            body["ExpressionAttributeValues"] = codec.serialize(self.values)
        return {self.action: body}

    def size_estimate(self) -> int:
        return len(json.dumps(self.request("t"), default=str))


@dataclass
class Counter:
    """A numeric attribute to add to at commit (merged into a staged Put of the same item)."""

    key: keys.Key
    attribute: str
    delta: int
    group: str
    # False: the item is created when absent (a running total); True: it must already exist.
    must_exist: bool = True


class Session:
    """The table access of one unit of work: consistent reads, staged writes, commit."""

    def __init__(self, client: DynamoDBClient, table_name: str, *, readonly: bool) -> None:
        self.client = client
        self.table_name = table_name
        self.readonly = readonly
        self.writes: dict[tuple[str, str], Write] = {}
        self.counters: list[Counter] = []
        # Raw items read in this unit of work, by key (members keep attributes the domain ignores).
        self.loaded: dict[tuple[str, str], dict[str, Any]] = {}
        # Counter values a decision was based on: adding to them is guarded by "still this value".
        self.observed: dict[tuple[str, str], dict[str, int]] = {}
        # Queues whose worker has new work once this commits (one wake-up message each).
        self.wakes: set[str] = set()
        # Bulk work cut into transactions by the repository itself (each with its own guard item),
        # written after the member groups and before the other writes, in order.
        self.bundles: list[list[Write]] = []
        # Notifications stored in this unit of work without a queue marker, by id: their storer plans
        # their sends before commit (``NotificationRepository.add(..., queue=False)``).
        self.unqueued_notifications: dict[str, dict[str, Any]] = {}

    # -- reads ----------------------------------------------------------------------------------

    def get(self, key: keys.Key, *, projection: Sequence[str] | None = None) -> dict[str, Any] | None:
        kwargs: dict[str, Any] = {"TableName": self.table_name, "Key": codec.serialize(key), "ConsistentRead": True}
        if projection:
            names = {f"#p{i}": name for i, name in enumerate(projection)}
            kwargs["ProjectionExpression"] = ", ".join(names)
            kwargs["ExpressionAttributeNames"] = names
        response = self.client.get_item(**kwargs)
        raw = response.get("Item")
        if raw is None:
            return None
        item = codec.deserialize(raw)
        if not projection:
            self.loaded[(key[PARTITION_KEY], key[SORT_KEY])] = item
        return item

    def batch_get(
        self, key_list: Sequence[keys.Key], *, projection: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """Strongly consistent reads of many items (100 keys a request; unprocessed keys retried)."""
        found: list[dict[str, Any]] = []
        unique = list({(k[PARTITION_KEY], k[SORT_KEY]): k for k in key_list}.values())
        for start in range(0, len(unique), 100):
            request: dict[str, Any] = {"Keys": [codec.serialize(k) for k in unique[start : start + 100]]}
            request["ConsistentRead"] = True
            if projection:
                names = {f"#p{i}": name for i, name in enumerate({*projection, PARTITION_KEY, SORT_KEY})}
                request["ProjectionExpression"] = ", ".join(names)
                request["ExpressionAttributeNames"] = names
            pending: dict[str, Any] = {self.table_name: request}
            delay = 0.05
            while pending:
                response = self.client.batch_get_item(RequestItems=pending)
                for raw in response.get("Responses", {}).get(self.table_name, []):
                    item = codec.deserialize(raw)
                    if not projection:
                        self.loaded[(item[PARTITION_KEY], item[SORT_KEY])] = item
                    found.append(item)
                pending = dict(response.get("UnprocessedKeys") or {})
                if pending:
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
        return found

    def query(self, **kwargs: Any) -> Iterator[tuple[list[dict[str, Any]], dict[str, Any] | None]]:
        """Pages of a Query: (items, LastEvaluatedKey). Base-table queries read consistently."""
        request = {"TableName": self.table_name, **kwargs}
        if "IndexName" not in request:
            request["ConsistentRead"] = True
        if "ExpressionAttributeValues" in request:
            request["ExpressionAttributeValues"] = codec.serialize(request["ExpressionAttributeValues"])
        if request.get("ExclusiveStartKey"):
            request["ExclusiveStartKey"] = codec.serialize(request["ExclusiveStartKey"])
        else:
            request.pop("ExclusiveStartKey", None)
        while True:
            response = self.client.query(**request)
            items = [codec.deserialize(raw) for raw in response.get("Items", [])]
            last = response.get("LastEvaluatedKey")
            last_key = codec.deserialize(last) if last else None
            yield items, last_key
            if not last:
                return
            request["ExclusiveStartKey"] = last

    def scan(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        request = {"TableName": self.table_name, "ConsistentRead": True, **kwargs}
        if "ExpressionAttributeValues" in request:
            request["ExpressionAttributeValues"] = codec.serialize(request["ExpressionAttributeValues"])
        while True:
            response = self.client.scan(**request)
            for raw in response.get("Items", []):
                yield codec.deserialize(raw)
            last = response.get("LastEvaluatedKey")
            if not last:
                return
            request["ExclusiveStartKey"] = last

    # -- staging --------------------------------------------------------------------------------

    def staged(self, key: keys.Key) -> Write | None:
        return self.writes.get((key[PARTITION_KEY], key[SORT_KEY]))

    def stage(self, write: Write, *, replace: bool = False) -> None:
        if self.readonly:
            raise RuntimeError("a read-only unit of work cannot write")
        existing = self.writes.get(write.key_tuple)
        if existing is not None and not replace:
            # DynamoDB refuses two operations on one item in a transaction; repositories merge.
            raise RuntimeError(f"item {write.key_tuple} is already written in this unit of work")
        self.writes[write.key_tuple] = write

    def rewrite(
        self,
        key: keys.Key,
        current: dict[str, Any],
        change: Callable[[dict[str, Any]], None],
        *,
        condition: str | None = None,
        values: dict[str, Any] | None = None,
        names: dict[str, str] | None = None,
        conflict: ConflictFactory | None = None,
    ) -> None:
        """Change an item read in this unit of work as a whole Put, so that two changes to one item
        in one unit of work add up (the second changes the first one's staged item)."""
        staged = self.staged(key)
        if staged is not None and staged.action == "Put" and staged.item is not None:
            change(staged.item)
            return
        if staged is not None:
            raise RuntimeError(f"item {(key[PARTITION_KEY], key[SORT_KEY])} already has a pending update")
        item = {k: v for k, v in current.items() if k not in (PARTITION_KEY, SORT_KEY)}
        change(item)
        self.stage(
            Write("Put", key, item=item, condition=condition, values=values or {}, names=names or {}, conflict=conflict)
        )

    def add_to(self, key: keys.Key, attribute: str, delta: int, group: str, *, must_exist: bool = True) -> None:
        """Add ``delta`` to a numeric attribute at commit. When ``observe`` saw its value in this unit
        of work, the write is guarded by that value (a budget check stays true at commit)."""
        if self.readonly:
            raise RuntimeError("a read-only unit of work cannot write")
        self.counters.append(Counter(key, attribute, delta, group, must_exist))

    def bundle(self, writes: list[Write]) -> None:
        """Stage writes that must travel together in one transaction of their own."""
        if self.readonly:
            raise RuntimeError("a read-only unit of work cannot write")
        if len(writes) > MAX_TRANSACTION_ITEMS:
            raise TransactionTooLarge(f"a bundle of {len(writes)} writes exceeds {MAX_TRANSACTION_ITEMS} items")
        if writes:
            self.bundles.append(writes)

    def wake(self, queue: str) -> None:
        if self.readonly:
            raise RuntimeError("a read-only unit of work cannot write")
        self.wakes.add(queue)

    def observe(self, key: keys.Key, attribute: str, value: int) -> None:
        where = (key[PARTITION_KEY], key[SORT_KEY])
        self.observed.setdefault(where, {}).setdefault(attribute, value)

    def pending_delta(self, key: keys.Key, attribute: str) -> int:
        return sum(c.delta for c in self.counters if c.key == key and c.attribute == attribute)

    def _merge_counters(self) -> None:
        totals: dict[tuple[str, str], dict[str, int]] = {}
        owners: dict[tuple[str, str], Counter] = {}
        for counter in self.counters:
            where = (counter.key[PARTITION_KEY], counter.key[SORT_KEY])
            attributes = totals.setdefault(where, {})
            attributes[counter.attribute] = attributes.get(counter.attribute, 0) + counter.delta
            owners.setdefault(where, counter)
        self.counters.clear()
        for where, attributes in totals.items():
            write = self.writes.get(where)
            if write is not None and write.action == "Put" and write.item is not None:
                for name, delta in attributes.items():
                    write.item[name] = int(write.item.get(name, 0)) + delta
                continue
            if write is not None:
                raise RuntimeError(f"cannot add to {sorted(attributes)} of an item already updated")
            owner = owners[where]
            names = {f"#a{i}": name for i, name in enumerate(attributes)}
            values: dict[str, Any] = {}
            seen = self.observed.get(where, {})
            sets: list[str] = []
            adds: list[str] = []
            conditions: list[str] = [f"attribute_exists({PARTITION_KEY})"] if owner.must_exist else []
            for i, (name, delta) in enumerate(attributes.items()):
                if name in seen:
                    # Guarded: the total this unit of work decided on must still be the stored one.
                    expected = seen[name]
                    sets.append(f"#a{i} = :n{i}")
                    values[f":n{i}"] = expected + delta
                    values[f":e{i}"] = expected
                    guard = f"#a{i} = :e{i}"
                    conditions.append(f"(attribute_not_exists(#a{i}) OR {guard})" if expected == 0 else guard)
                else:
                    adds.append(f"#a{i} :d{i}")
                    values[f":d{i}"] = delta
            update = " ".join(
                part
                for part in ("SET " + ", ".join(sets) if sets else "", "ADD " + ", ".join(adds) if adds else "")
                if part
            )
            self.writes[where] = Write(
                action="Update",
                key=owner.key,
                update=update,
                condition=" AND ".join(conditions) or None,
                names=names,
                values=values,
                group=owner.group,
                conflict=lambda: ConcurrencyConflict("a running total changed concurrently; retry"),
            )

    # -- commit ---------------------------------------------------------------------------------

    def transactions(self) -> list[list[Write]]:
        """The staged writes cut into transactions, never splitting a member's group."""
        self._merge_counters()
        groups: dict[str, list[Write]] = {}
        for write in self.writes.values():
            groups.setdefault(write.group, []).append(write)
        shared = groups.pop(SHARED_GROUP, [])
        # The audit entries that describe this unit of work travel with its last transaction.
        late = groups.pop(AUDIT_GROUP, [])
        # (writes, alone): a bundle is a transaction of its own, never packed with other writes.
        units: list[tuple[list[Write], bool]] = []
        for name, writes in [*groups.items(), (AUDIT_GROUP, late)]:
            size = sum(w.size_estimate() for w in writes)
            if len(writes) > MAX_TRANSACTION_ITEMS or size > TRANSACTION_BYTES_BUDGET:
                raise TransactionTooLarge(
                    f"one change to {name} needs {len(writes)} items ({size} bytes); a DynamoDB transaction "
                    f"holds at most {MAX_TRANSACTION_ITEMS} items and 4 MB: split the work into smaller parts",
                    details={"group": name, "items": len(writes)},
                )
            if name != AUDIT_GROUP:
                units.append((writes, False))
        units.extend((bundle, True) for bundle in self.bundles)
        # Writes that belong to no member (orders' neighbours, progress records, bulk claims) may be
        # split one by one; they go last so that progress is recorded after the work it describes.
        units.extend(([w], False) for w in shared)
        if late:
            units.append((late, False))
        chunks: list[list[Write]] = []
        current: list[Write] = []
        current_bytes = 0
        for unit, alone in units:
            unit_bytes = sum(w.size_estimate() for w in unit)
            if current and (
                alone
                or len(current) + len(unit) > MAX_TRANSACTION_ITEMS
                or current_bytes + unit_bytes > TRANSACTION_BYTES_BUDGET
            ):
                chunks.append(current)
                current, current_bytes = [], 0
            if alone:
                chunks.append(unit)
                continue
            current.extend(unit)
            current_bytes += unit_bytes
        if current:
            chunks.append(current)
        return chunks

    def commit(self) -> int:
        """Write everything staged; returns the number of write requests made."""
        if self.readonly:
            raise RuntimeError("a read-only unit of work cannot commit")
        chunks = self.transactions()
        for chunk in chunks:
            self._write(chunk)
        self.writes.clear()
        self.bundles.clear()
        return len(chunks)

    def _write(self, chunk: list[Write]) -> None:
        if len(chunk) == 1:
            self._write_one(chunk[0])
            return
        try:
            self.client.transact_write_items(TransactItems=[w.request(self.table_name) for w in chunk])  # type: ignore[misc]
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") != "TransactionCanceledException":
                raise
            reasons = exc.response.get("CancellationReasons") or _reasons_from_message(error.get("Message", ""))
            raise _conflict_for(chunk, reasons) from None

    def _write_one(self, write: Write) -> None:
        body = write.request(self.table_name)[write.action]
        try:
            if write.action == "Put":
                self.client.put_item(**body)
            elif write.action == "Update":
                self.client.update_item(**body)
            elif write.action == "Delete":
                self.client.delete_item(**body)
            else:
                # A lone condition check guards nothing: the change it guarded is not there.
                return
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise _make_conflict(write) from None
            raise


def _make_conflict(write: Write) -> Exception:
    if write.conflict is not None:
        return write.conflict()
    return ConcurrencyConflict(f"item {write.key[PARTITION_KEY]} changed concurrently; retry")


def _reasons_from_message(message: str) -> list[dict[str, str]]:
    """botocore puts the reasons in the message when the response lacks the structured list."""
    start, end = message.find("["), message.rfind("]")
    if start < 0 or end < 0:
        return []
    return [{"Code": part.strip()} for part in message[start + 1 : end].split(",")]


def _conflict_for(chunk: Sequence[Write], reasons: Sequence[Any]) -> Exception:
    for write, reason in zip(chunk, reasons, strict=False):
        code = reason.get("Code") if isinstance(reason, dict) else None
        if code == "ConditionalCheckFailed":
            return _make_conflict(write)
    for reason in reasons:
        code = reason.get("Code") if isinstance(reason, dict) else None
        if code == "TransactionConflict":
            return ConcurrencyConflict("a concurrent transaction touched the same items; retry")
    return ConcurrencyConflict("the transaction was cancelled; retry")


def outbox_message_id(event_id: str, handler: str) -> int:
    """A stable positive 63-bit id for one (event, subscriber) pair: retries find the same item."""
    digest = hashlib.blake2b(f"{event_id}\x00{handler}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


class DynamoUnitOfWork(UnitOfWork):
    """``with uow: ... uow.commit()``; leaving without commit discards everything staged."""

    outbox: repos.DynamoOutboxRepository

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        subscribers: Subscribers,
        *,
        readonly: bool = False,
        clock: Callable[[], datetime] | None = None,
        extensions: Sequence[Callable[[DynamoUnitOfWork], None]] = (),
        interested: Interested | None = None,
    ) -> None:
        super().__init__()
        self.client = client
        self.table_name = table_name
        self.subscribers = subscribers
        self.readonly = readonly
        self.clock = clock or (lambda: datetime.now(UTC))
        # Feature modules attach their repositories here (one callable each).
        self.extensions = tuple(extensions)
        # A subscriber that can tell it has nothing to do (no webhook endpoint listens) gets no
        # outbox message: no item in the transaction, no delivery afterwards.
        self.interested = interested
        self.session: Session | None = None
        self.write_requests = 0

    def __enter__(self) -> DynamoUnitOfWork:
        # Imported here: the repositories import this module (for Session and Write).
        from accrue.adapters.aws import repositories as repos
        from accrue.adapters.aws.campaigns import DynamoCampaignRepository
        from accrue.adapters.aws.gdpr import DynamoPersonalDataRepository
        from accrue.adapters.aws.notification_channels import (
            DynamoNotificationSendRepository,
            DynamoPreferenceRepository,
        )
        from accrue.adapters.aws.payments import (
            DynamoAuditLogRepository,
            DynamoPaymentBatchRepository,
            DynamoPaymentRepository,
        )
        from accrue.adapters.aws.queue_writer import DynamoQueueWriter
        from accrue.adapters.aws.referrals import DynamoPayoutRepository, DynamoReferralRepository
        from accrue.adapters.aws.webhooks import (
            DynamoWebhookDeliveryRepository,
            DynamoWebhookEndpointRepository,
            DynamoWebhookEventRepository,
        )

        if self.session is not None:
            raise RuntimeError("this unit of work is already open")
        session = Session(self.client, self.table_name, readonly=self.readonly)
        self.session = session
        self.members = repos.DynamoMemberRepository(session)
        self.ledger = repos.DynamoLedgerRepository(session)
        self.orders = repos.DynamoOrderRepository(session)
        self.notifications = repos.DynamoNotificationRepository(session)
        self.outbox = repos.DynamoOutboxRepository(session)
        self.imports = repos.DynamoImportRepository(session)
        self.schedule_runs = repos.DynamoScheduleRunRepository(session)
        self.campaigns = DynamoCampaignRepository(session)
        self.personal_data = DynamoPersonalDataRepository(session)
        self.notification_preferences = DynamoPreferenceRepository(session)
        self.notification_sends = DynamoNotificationSendRepository(session)
        self.payments = DynamoPaymentRepository(session)
        self.payment_batches = DynamoPaymentBatchRepository(session)
        self.audit = DynamoAuditLogRepository(session)
        self.referrals = DynamoReferralRepository(session)
        self.payouts = DynamoPayoutRepository(session)
        self.webhook_events = DynamoWebhookEventRepository(session)
        self.webhook_endpoints = DynamoWebhookEndpointRepository(session)
        self.webhook_deliveries = DynamoWebhookDeliveryRepository(session)
        # Sends to any queue name; the wiring replaces it with one that knows the configured queues.
        self.queues = DynamoQueueWriter(session)
        for extend in self.extensions:
            extend(self)
        return self

    def _commit(self, events: Sequence[Event]) -> None:
        session = self._open()
        if self.readonly:
            raise RuntimeError("a read-only unit of work cannot commit")
        owner = {id(e): f"member:{m.user_id}" for m in self._seen for e in m.events}
        now = self.clock()
        wanted: dict[str, Sequence[str]] = {}
        for event in events:
            handlers = wanted.get(event.name)
            if handlers is None:
                handlers = wanted[event.name] = self._wanted_by(event.name)
            if not handlers:
                continue
            payload = codec.dumps(event.to_dict())
            for handler in handlers:
                self.outbox.stage_new(
                    outbox_message_id(event.event_id, handler),
                    event.event_id,
                    event.name,
                    handler,
                    payload,
                    now,
                    group=owner.get(id(event), SHARED_GROUP),
                )
        if session.wakes:
            from accrue.adapters.aws.queue_writer import DynamoQueueWriter  # it imports this module

            writer = DynamoQueueWriter(session)
            for queue in sorted(session.wakes):
                writer.send_batch(queue, [{"wake": queue}])
        self.write_requests += session.commit()
        self.session = Session(self.client, self.table_name, readonly=self.readonly)
        self._rebind(self.session)

    def _wanted_by(self, event_name: str) -> Sequence[str]:
        """The subscribers that want an event of this name, asked once per commit."""
        handlers = self.subscribers(event_name)
        if self.interested is None:
            return handlers
        return [h for h in handlers if self.interested(h, event_name, self)]

    def _rebind(self, session: Session) -> None:
        """After a commit the unit of work may be used again (as SQLite's may): fresh staging."""
        for name in vars(self):
            repo = getattr(self, name)
            if hasattr(repo, "session") and isinstance(getattr(repo, "session", None), Session):
                repo.session = session

    def rollback(self) -> None:
        if self.session is not None:
            self.session.writes.clear()
            self.session.counters.clear()
            self.session.wakes.clear()
            self.session.bundles.clear()

    def __exit__(self, *args: object) -> None:
        self.rollback()
        self.session = None

    def _open(self) -> Session:
        if self.session is None:
            raise RuntimeError("the unit of work is not open")
        return self.session
