"""DynamoDB repositories for payments, payment batches and the hash-chained audit log.

- A payment is one item, version-guarded on every save. Listings read GSI1 (one partition per
  status, newest first); a batch's payments are on GSI2 by line.
- A batch's rows are written in bulk (100 a transaction): a chunk of a file may take several
  transactions, and the batch's progress goes in the last one. A chunk cut short by a crash is read
  again on resume; rows this batch already stored at the same line count as its own, so nothing is
  doubled and no row is reported twice.
- The audit log is one partition in chain order (``AUDIT``/``SEQ#n``) and a head item; an append
  writes its entries and moves the head in one transaction, guarded by the head it read, so two
  writers can never fork the chain (one of them retries).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from accrue.adapters.aws import codec, keys
from accrue.adapters.aws.dynamodb_uow import AUDIT_GROUP, Session, Write
from accrue.adapters.aws.repositories import BASE_TABLE, ENTITY, page
from accrue.adapters.aws.table import GSI1, GSI2, PARTITION_KEY, SORT_KEY
from accrue.domain.audit import GENESIS_HASH, AuditEntry, AuditRecord, seal
from accrue.domain.errors import ConcurrencyConflict, Conflict
from accrue.domain.payments import BatchRowIssue, BatchStatus, Payment, PaymentBatch, PaymentRow, PaymentStatus
from accrue.ports import AuditLogRepository, Page, PaymentBatchRepository, PaymentRepository


def _payment_item(payment: Payment) -> dict[str, Any]:
    item = {ENTITY: "payment", **codec.to_attributes(payment)}
    item.update(
        keys.payment_indexes(
            str(payment.status), payment.created_at, payment.payment_id, payment.batch_id, payment.batch_line
        )
    )
    return item


def _payment(item: dict[str, Any]) -> Payment:
    return codec.from_attributes(Payment, item)


class DynamoPaymentRepository(PaymentRepository):
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, payment: Payment) -> None:
        if payment.batch_id is not None:
            raise ValueError("payments from a batch file are added with add_batch_rows")

        def taken() -> Exception:
            return Conflict(
                f"a payment with paymentId {payment.payment_id} already exists", details={"field": "paymentId"}
            )

        if self.session.staged(keys.payment(payment.payment_id)) is not None:
            raise taken()
        self.session.stage(Write.insert(keys.payment(payment.payment_id), _payment_item(payment), conflict=taken))

    def _origins(self, payment_ids: Sequence[str]) -> dict[str, tuple[str | None, int | None]]:
        found: dict[str, tuple[str | None, int | None]] = {}
        for item in self.session.batch_get(
            [keys.payment(p) for p in payment_ids], projection=("payment_id", "batch_id", "batch_line")
        ):
            line = item.get("batch_line")
            found[str(item["payment_id"])] = (item.get("batch_id"), int(line) if line is not None else None)
        return found

    def add_batch_rows(
        self, rows: Sequence[PaymentRow], *, batch_id: str, now: datetime, workflow_step: str
    ) -> dict[int, tuple[str | None, int | None]]:
        stored = self._origins([r.payment_id for r in rows])
        skipped: dict[int, tuple[str | None, int | None]] = {}
        first_in_rows: dict[str, int] = {}
        for row in rows:
            origin = stored.get(row.payment_id)
            if origin is not None:
                if origin != (batch_id, row.line):
                    skipped[row.line] = origin
                continue  # this batch's own row, stored by an earlier attempt at the chunk
            earlier = first_in_rows.get(row.payment_id)
            if earlier is not None:
                skipped[row.line] = (batch_id, earlier)
                continue
            first_in_rows[row.payment_id] = row.line
            payment = Payment(
                payment_id=row.payment_id,
                amount_minor=row.amount_minor,
                currency=row.currency,
                status=PaymentStatus.PENDING,
                created_at=now,
                updated_at=now,
                user_id=row.user_id,
                batch_id=batch_id,
                batch_line=row.line,
                workflow_step=workflow_step,
            )
            self.session.stage(
                Write.insert(
                    keys.payment(row.payment_id),
                    _payment_item(payment),
                    conflict=lambda: ConcurrencyConflict("a payment id was taken concurrently; retry the chunk"),
                )
            )
        return skipped

    def batch_rows(self, batch_id: str, first_line: int, last_line: int) -> list[PaymentRow]:
        rows: list[PaymentRow] = []
        for items, _ in self.session.query(
            IndexName=GSI2.name,
            KeyConditionExpression="#pk = :pk AND #sk BETWEEN :first AND :last",
            ExpressionAttributeNames={"#pk": GSI2.partition_key, "#sk": GSI2.sort_key},
            ExpressionAttributeValues={
                ":pk": keys.join(keys.Prefix.PAYMENT_BATCH, batch_id),
                ":first": keys.sortable_number(first_line),
                ":last": keys.sortable_number(last_line),
            },
        ):
            rows.extend(
                PaymentRow(
                    int(i["batch_line"]),
                    str(i["payment_id"]),
                    int(i["amount_minor"]),
                    str(i["currency"]),
                    i.get("user_id"),
                )
                for i in items
            )
        return rows

    def get(self, payment_id: str) -> Payment | None:
        item = self.session.get(keys.payment(payment_id))
        return _payment(item) if item else None

    def save(self, payment: Payment) -> None:
        key = keys.payment(payment.payment_id)
        staged = self.session.staged(key)
        expected = payment.version
        payment.version += 1
        if staged is not None and staged.item is not None:
            if int(staged.item["version"]) != expected:
                payment.version -= 1
                raise ConcurrencyConflict(f"payment {payment.payment_id} changed concurrently; retry")
            staged.item = _payment_item(payment)
            return
        self.session.stage(
            Write(
                "Put",
                key,
                item=_payment_item(payment),
                condition="version = :expected",
                values={":expected": expected},
                conflict=lambda: ConcurrencyConflict(f"payment {payment.payment_id} changed concurrently; retry"),
            )
        )

    def list(
        self,
        status: PaymentStatus | None,
        created_from: datetime | None,
        created_to: datetime | None,
        limit: int,
        cursor: str | None,
    ) -> Page[Payment]:
        statuses = [status] if status is not None else list(PaymentStatus)
        position = codec.decode_cursor(cursor)
        high = keys.sortable_time(created_to) if created_to is not None else "~"
        if position is not None:
            high = min(high, position)
        low = keys.sortable_time(created_from) if created_from is not None else "0"
        if position == "" or high <= low:
            return Page([], None)
        found: list[dict[str, Any]] = []
        for each in statuses:
            for items, _ in self.session.query(
                IndexName=GSI1.name,
                KeyConditionExpression="#pk = :pk AND #sk BETWEEN :low AND :high",
                ExpressionAttributeNames={"#pk": GSI1.partition_key, "#sk": GSI1.sort_key},
                ExpressionAttributeValues={
                    ":pk": keys.join(keys.Prefix.PAYMENTS, str(each)),
                    ":low": low,
                    ":high": high,
                },
                ScanIndexForward=False,
                Limit=limit + 2,
            ):
                # ``created_to`` is exclusive and the cursor's own item was on the previous page.
                found.extend(
                    i
                    for i in items
                    if str(i[GSI1.sort_key]) != position
                    and (created_to is None or str(i[GSI1.sort_key]) < keys.sortable_time(created_to))
                )
                break
        found.sort(key=lambda i: str(i[GSI1.sort_key]), reverse=True)
        next_cursor = codec.encode_cursor(str(found[limit - 1][GSI1.sort_key])) if len(found) > limit else None
        return Page([_payment(i) for i in found[:limit]], next_cursor)

    def count_by_status(self, batch_id: str | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        if batch_id is not None:
            for items, _ in self.session.query(
                IndexName=GSI2.name,
                KeyConditionExpression="#pk = :pk",
                ExpressionAttributeNames={"#pk": GSI2.partition_key, "#s": "status"},
                ExpressionAttributeValues={":pk": keys.join(keys.Prefix.PAYMENT_BATCH, batch_id)},
                ProjectionExpression="#s",
            ):
                for item in items:
                    counts[str(item["status"])] = counts.get(str(item["status"]), 0) + 1
            return counts
        for status in PaymentStatus:
            request: dict[str, Any] = {
                "TableName": self.session.table_name,
                "IndexName": GSI1.name,
                "KeyConditionExpression": "#pk = :pk",
                "ExpressionAttributeNames": {"#pk": GSI1.partition_key},
                "ExpressionAttributeValues": codec.serialize({":pk": keys.join(keys.Prefix.PAYMENTS, str(status))}),
                "Select": "COUNT",
            }
            total = 0
            while True:
                response = self.session.client.query(**request)
                total += int(response.get("Count", 0))
                if not response.get("LastEvaluatedKey"):
                    break
                request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
            if total:
                counts[str(status)] = total
        return counts


# -- batches ----------------------------------------------------------------------------------


def _batch_item(batch: PaymentBatch) -> dict[str, Any]:
    item = {ENTITY: "payment_batch", **codec.to_attributes(batch)}
    if batch.status is BatchStatus.PROCESSING:
        item.update(keys.unfinished_batch(batch.created_at, batch.batch_id))
    return item


class DynamoPaymentBatchRepository(PaymentBatchRepository):
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, batch: PaymentBatch) -> bool:
        key = keys.payment_batch(batch.batch_id)
        if self.session.staged(key) is not None or self.session.get(key, projection=(PARTITION_KEY,)) is not None:
            return False
        self.session.stage(
            Write.insert(
                key,
                _batch_item(batch),
                conflict=lambda: ConcurrencyConflict(f"batch {batch.batch_id} was registered concurrently; retry"),
            )
        )
        return True

    def get(self, batch_id: str) -> PaymentBatch | None:
        item = self.session.get(keys.payment_batch(batch_id))
        return codec.from_attributes(PaymentBatch, item) if item else None

    def advance(self, batch: PaymentBatch, expected_offset: int) -> bool:
        key = keys.payment_batch(batch.batch_id)
        current = self.session.get(key)
        if (
            current is None
            or int(current["byte_offset"]) != expected_offset
            or current["status"] != str(BatchStatus.PROCESSING)
        ):
            return False
        self.session.stage(
            Write(
                "Put",
                key,
                item=_batch_item(batch),
                condition="byte_offset = :expected AND #status = :processing",
                names={"#status": "status"},
                values={":expected": expected_offset, ":processing": str(BatchStatus.PROCESSING)},
                conflict=lambda: ConcurrencyConflict(f"batch {batch.batch_id} was moved on by another ingester"),
            ),
            replace=True,
        )
        return True

    def add_issues(self, batch_id: str, issues: Sequence[BatchRowIssue]) -> None:
        for issue in issues:
            self.session.stage(
                Write(
                    "Put",
                    keys.batch_issue(batch_id, issue.line),
                    item={ENTITY: "batch_issue", "line": issue.line, "kind": issue.kind, "reason": issue.reason[:500]},
                ),
                replace=True,
            )

    def issues(self, batch_id: str, kind: str | None, limit: int, cursor: str | None) -> Page[BatchRowIssue]:
        items, next_cursor = page(
            self.session,
            index=BASE_TABLE,
            partition=keys.payment_batch(batch_id)[PARTITION_KEY],
            sort_prefix=keys.join(keys.Prefix.ISSUE, ""),
            limit=limit,
            cursor=cursor,
            newest_first=False,
            keep=(lambda i: i.get("kind") == kind) if kind is not None else None,
        )
        return Page([BatchRowIssue(int(i["line"]), str(i["kind"]), str(i["reason"])) for i in items], next_cursor)

    def unfinished(self) -> list[str]:
        found: list[str] = []
        for items, _ in self.session.query(
            IndexName=GSI2.name,
            KeyConditionExpression="#pk = :pk",
            ExpressionAttributeNames={"#pk": GSI2.partition_key},
            ExpressionAttributeValues={":pk": keys.UNFINISHED_BATCHES},
        ):
            found.extend(str(i["batch_id"]) for i in items)
        fresh = {
            str(i["batch_id"])
            for i in self.session.batch_get([keys.payment_batch(b) for b in found])
            if i["status"] == str(BatchStatus.PROCESSING)
        }
        return [b for b in found if b in fresh]


# -- audit log --------------------------------------------------------------------------------


def _entry(item: dict[str, Any]) -> AuditEntry:
    return AuditEntry(
        seq=int(item["seq"]),
        occurred_at=str(item["occurred_at"]),
        actor=str(item["actor"]),
        action=str(item["action"]),
        subject_type=str(item["subject_type"]),
        subject_id=str(item["subject_id"]),
        details=str(item["details"]),
        prev_hash=str(item["prev_hash"]),
        hash=str(item["hash"]),
    )


class DynamoAuditLogRepository(AuditLogRepository):
    def __init__(self, session: Session) -> None:
        self.session = session

    def append(self, records: Sequence[AuditRecord]) -> list[AuditEntry]:
        if not records:
            return []
        head_key = keys.audit_head()
        staged = self.session.staged(head_key)
        if staged is not None and staged.item is not None:
            head: dict[str, Any] | None = staged.item
        else:
            head = self.session.get(head_key)
            # The head this unit of work builds on; the commit moves it only if it is still there.
            seen = int(head["seq"]) if head else 0
            self._seen_head = seen
        last_seq, prev_hash = (int(head["seq"]), str(head["hash"])) if head else (0, GENESIS_HASH)
        entries = seal(records, first_seq=last_seq + 1, prev_hash=prev_hash)
        for entry in entries:
            item = {
                ENTITY: "audit_entry",
                "seq": entry.seq,
                "occurred_at": entry.occurred_at,
                "actor": entry.actor,
                "action": entry.action,
                "subject_type": entry.subject_type,
                "subject_id": entry.subject_id,
                "details": entry.details,
                "prev_hash": entry.prev_hash,
                "hash": entry.hash,
                **keys.audit_subject(entry.subject_type, entry.subject_id, entry.seq),
            }
            self.session.stage(
                Write.insert(
                    keys.audit_entry(entry.seq),
                    item,
                    group=AUDIT_GROUP,
                    conflict=lambda: ConcurrencyConflict("the audit log grew concurrently; retry"),
                )
            )
        new_head = {ENTITY: "audit_head", "seq": entries[-1].seq, "hash": entries[-1].hash}
        if staged is not None:
            staged.item = new_head
        else:
            seen = self._seen_head
            self.session.stage(
                Write(
                    "Put",
                    head_key,
                    item=new_head,
                    condition=f"attribute_not_exists({PARTITION_KEY})" if seen == 0 else "seq = :seen",
                    values={} if seen == 0 else {":seen": seen},
                    group=AUDIT_GROUP,
                    conflict=lambda: ConcurrencyConflict("the audit log grew concurrently; retry"),
                )
            )
        return entries

    _seen_head = 0

    def for_subject(self, subject_type: str, subject_id: str, limit: int, cursor: str | None) -> Page[AuditEntry]:
        partition = keys.audit_subject(subject_type, subject_id, 0)[GSI1.partition_key]
        items, next_cursor = page(
            self.session,
            index=GSI1.name,
            partition=partition,
            sort_prefix="",
            limit=limit,
            cursor=cursor,
            newest_first=False,
        )
        return Page([_entry(i) for i in items], next_cursor)

    def iter_all(self, batch_size: int = 5000) -> Iterator[AuditEntry]:
        for items, _ in self.session.query(
            KeyConditionExpression="#pk = :pk AND begins_with(#sk, :prefix)",
            ExpressionAttributeNames={"#pk": PARTITION_KEY, "#sk": SORT_KEY},
            ExpressionAttributeValues={":pk": keys.AUDIT_PARTITION, ":prefix": "SEQ#"},
            Limit=batch_size,
        ):
            for item in items:
                yield _entry(item)
