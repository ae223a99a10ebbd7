"""SQLite repositories for payments, payment batches and the hash-chained audit log."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from accrue.adapters.sqlite.codec import decode_cursor, encode_cursor, iso, parse_iso
from accrue.domain.audit import GENESIS_HASH, AuditEntry, AuditRecord, seal
from accrue.domain.errors import ConcurrencyConflict, Conflict, InvalidInput
from accrue.domain.payments import BatchRowIssue, BatchStatus, Payment, PaymentBatch, PaymentRow, PaymentStatus
from accrue.ports import AuditLogRepository, Page, PaymentBatchRepository, PaymentRepository

# SQLite's default limit on bound parameters is 32 766; stay well below it.
_IN_CHUNK = 900


def _epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


def _from_epoch(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def _cursor(cursor: str | None, default: int) -> int:
    try:
        seq = decode_cursor(cursor)
    except ValueError:
        raise InvalidInput("cursor", "is not a cursor this service issued") from None
    return seq if seq is not None else default


_WRITTEN_COLUMNS = (
    "payment_id, amount_minor, currency, user_id, status, attempts, failure_reason, last_error, "
    "gateway_reference, points_earned, batch_line, workflow_step, step_attempts, next_attempt_at, "
    "lease_until, version, created_at, updated_at"
)
# Rows keep the small key of their batch; reads give back the batch id (the file's SHA-256).
PAYMENT_COLUMNS = (
    f"seq, {_WRITTEN_COLUMNS}, (SELECT b.batch_id FROM payment_batches b WHERE b.seq = payments.batch_ref) AS batch_id"
)
_PAYMENT_INSERT = f"INSERT INTO payments ({_WRITTEN_COLUMNS}) VALUES ({','.join('?' * 18)})"


def payment_row(p: Payment) -> tuple[object, ...]:
    return (
        p.payment_id,
        p.amount_minor,
        p.currency,
        p.user_id,
        str(p.status),
        p.attempts,
        p.failure_reason,
        p.last_error,
        p.gateway_reference,
        p.points_earned,
        p.batch_line,
        p.workflow_step,
        p.step_attempts,
        _epoch(p.next_attempt_at),
        _epoch(p.lease_until),
        p.version,
        iso(p.created_at),
        iso(p.updated_at),
    )


def _payment(row: sqlite3.Row) -> Payment:
    return Payment(
        payment_id=row["payment_id"],
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        user_id=row["user_id"],
        status=PaymentStatus(row["status"]),
        attempts=row["attempts"],
        failure_reason=row["failure_reason"],
        last_error=row["last_error"],
        gateway_reference=row["gateway_reference"],
        points_earned=row["points_earned"],
        batch_id=row["batch_id"],
        batch_line=row["batch_line"],
        workflow_step=row["workflow_step"],
        step_attempts=row["step_attempts"],
        next_attempt_at=_from_epoch(row["next_attempt_at"]),
        lease_until=_from_epoch(row["lease_until"]),
        version=row["version"],
        created_at=parse_iso(row["created_at"]),
        updated_at=parse_iso(row["updated_at"]),
    )


class SqlitePaymentRepository(PaymentRepository):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(self, payment: Payment) -> None:
        if payment.batch_id is not None:
            raise ValueError("payments from a batch file are added with add_batch_rows")
        try:
            self.conn.execute(_PAYMENT_INSERT, payment_row(payment))
        except sqlite3.IntegrityError:
            raise Conflict(
                f"a payment with paymentId {payment.payment_id} already exists", details={"field": "paymentId"}
            ) from None

    def _batch_ref(self, batch_id: str) -> int:
        row = self.conn.execute("SELECT seq FROM payment_batches WHERE batch_id = ?", (batch_id,)).fetchone()
        if row is None:
            raise LookupError(f"no batch {batch_id}")
        return int(row[0])

    def add_batch_rows(
        self, rows: Sequence[PaymentRow], *, batch_id: str, now: datetime, workflow_step: str
    ) -> dict[int, tuple[str | None, int | None]]:
        ref, at = self._batch_ref(batch_id), iso(now)
        before = self.conn.total_changes
        self.conn.executemany(
            "INSERT INTO payments (payment_id, amount_minor, currency, user_id, status, batch_ref, batch_line, "
            "workflow_step, created_at, updated_at) VALUES (?,?,?,?,'pending',?,?,?,?,?) "
            "ON CONFLICT (payment_id) DO NOTHING",
            [
                (payment_id, minor, currency, user_id, ref, line, workflow_step, at, at)
                for line, payment_id, minor, currency, user_id in rows
            ],
        )
        if self.conn.total_changes - before == len(rows):
            return {}  # the common case: every row was new, no lookup needed
        # Some ids were taken: each row that is not the stored payment's own row was skipped.
        stored = self._origins([r.payment_id for r in rows])
        return {
            r.line: origin
            for r in rows
            if (origin := stored.get(r.payment_id)) is not None and origin != (batch_id, r.line)
        }

    def _origins(self, payment_ids: Sequence[str]) -> dict[str, tuple[str | None, int | None]]:
        found: dict[str, tuple[str | None, int | None]] = {}
        unique = sorted(set(payment_ids))
        for start in range(0, len(unique), _IN_CHUNK):
            part = unique[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(part))
            for row in self.conn.execute(
                "SELECT p.payment_id, b.batch_id, p.batch_line FROM payments p "
                f"LEFT JOIN payment_batches b ON b.seq = p.batch_ref WHERE p.payment_id IN ({marks})",
                part,
            ):
                found[row[0]] = (row[1], row[2])
        return found

    def batch_rows(self, batch_id: str, first_line: int, last_line: int) -> list[PaymentRow]:
        rows = self.conn.execute(
            "SELECT batch_line, payment_id, amount_minor, currency, user_id FROM payments "
            "WHERE batch_ref = (SELECT seq FROM payment_batches WHERE batch_id = ?) "
            "AND batch_line BETWEEN ? AND ? ORDER BY batch_line",
            (batch_id, first_line, last_line),
        ).fetchall()
        return [PaymentRow(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def get(self, payment_id: str) -> Payment | None:
        row = self.conn.execute(
            f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE payment_id = ?", (payment_id,)
        ).fetchone()
        return _payment(row) if row else None

    def save(self, payment: Payment) -> None:
        cur = self.conn.execute(
            "UPDATE payments SET status = ?, attempts = ?, failure_reason = ?, last_error = ?, gateway_reference = ?, "
            "points_earned = ?, workflow_step = ?, step_attempts = ?, next_attempt_at = ?, lease_until = ?, "
            "updated_at = ?, version = version + 1 WHERE payment_id = ? AND version = ?",
            (
                str(payment.status),
                payment.attempts,
                payment.failure_reason,
                payment.last_error,
                payment.gateway_reference,
                payment.points_earned,
                payment.workflow_step,
                payment.step_attempts,
                _epoch(payment.next_attempt_at),
                _epoch(payment.lease_until),
                iso(payment.updated_at),
                payment.payment_id,
                payment.version,
            ),
        )
        if cur.rowcount != 1:
            raise ConcurrencyConflict(f"payment {payment.payment_id} changed concurrently; retry")
        payment.version += 1

    def list(
        self,
        status: PaymentStatus | None,
        created_from: datetime | None,
        created_to: datetime | None,
        limit: int,
        cursor: str | None,
    ) -> Page[Payment]:
        clauses: list[str] = ["seq < ?"]
        params: list[object] = [_cursor(cursor, 2**62)]
        if status is not None:
            clauses.append("status = ?")
            params.append(str(status))
        if created_from is not None:
            clauses.append("created_at >= ?")
            params.append(iso(created_from))
        if created_to is not None:
            clauses.append("created_at < ?")
            params.append(iso(created_to))
        rows = self.conn.execute(
            f"SELECT {PAYMENT_COLUMNS} FROM payments WHERE {' AND '.join(clauses)} ORDER BY seq DESC LIMIT ?",
            (*params, limit + 1),
        ).fetchall()
        next_cursor = encode_cursor(rows[limit - 1]["seq"]) if len(rows) > limit else None
        return Page([_payment(r) for r in rows[:limit]], next_cursor)

    def count_by_status(self, batch_id: str | None = None) -> dict[str, int]:
        if batch_id is None:
            rows = self.conn.execute("SELECT status, COUNT(*) FROM payments GROUP BY status").fetchall()
        else:
            rows = self.conn.execute(
                "SELECT status, COUNT(*) FROM payments "
                "WHERE batch_ref = (SELECT seq FROM payment_batches WHERE batch_id = ?) GROUP BY status",
                (batch_id,),
            ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}


def _batch(row: sqlite3.Row) -> PaymentBatch:
    return PaymentBatch(
        batch_id=row["batch_id"],
        status=BatchStatus(row["status"]),
        source=row["source"],
        file_name=row["file_name"],
        blob_key=row["blob_key"],
        size_bytes=row["size_bytes"],
        actor=row["actor"],
        byte_offset=row["byte_offset"],
        line_number=row["line_number"],
        total_rows=row["total_rows"],
        accepted_rows=row["accepted_rows"],
        rejected_rows=row["rejected_rows"],
        duplicate_rows=row["duplicate_rows"],
        error=row["error"],
        created_at=parse_iso(row["created_at"]),
        updated_at=parse_iso(row["updated_at"]),
        completed_at=parse_iso(row["completed_at"]) if row["completed_at"] else None,
    )


class SqlitePaymentBatchRepository(PaymentBatchRepository):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(self, batch: PaymentBatch) -> bool:
        cur = self.conn.execute(
            "INSERT INTO payment_batches (batch_id, status, source, file_name, blob_key, size_bytes, actor, "
            "byte_offset, line_number, total_rows, accepted_rows, rejected_rows, duplicate_rows, error, created_at, "
            "updated_at, completed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (batch_id) DO NOTHING",
            (
                batch.batch_id,
                str(batch.status),
                batch.source,
                batch.file_name,
                batch.blob_key,
                batch.size_bytes,
                batch.actor,
                batch.byte_offset,
                batch.line_number,
                batch.total_rows,
                batch.accepted_rows,
                batch.rejected_rows,
                batch.duplicate_rows,
                batch.error,
                iso(batch.created_at),
                iso(batch.updated_at),
                iso(batch.completed_at) if batch.completed_at else None,
            ),
        )
        return cur.rowcount == 1

    def get(self, batch_id: str) -> PaymentBatch | None:
        row = self.conn.execute("SELECT * FROM payment_batches WHERE batch_id = ?", (batch_id,)).fetchone()
        return _batch(row) if row else None

    def advance(self, batch: PaymentBatch, expected_offset: int) -> bool:
        cur = self.conn.execute(
            "UPDATE payment_batches SET status = ?, byte_offset = ?, line_number = ?, total_rows = ?, "
            "accepted_rows = ?, rejected_rows = ?, duplicate_rows = ?, error = ?, updated_at = ?, completed_at = ? "
            "WHERE batch_id = ? AND byte_offset = ? AND status = 'processing'",
            (
                str(batch.status),
                batch.byte_offset,
                batch.line_number,
                batch.total_rows,
                batch.accepted_rows,
                batch.rejected_rows,
                batch.duplicate_rows,
                batch.error,
                iso(batch.updated_at),
                iso(batch.completed_at) if batch.completed_at else None,
                batch.batch_id,
                expected_offset,
            ),
        )
        return cur.rowcount == 1

    def add_issues(self, batch_id: str, issues: Sequence[BatchRowIssue]) -> None:
        self.conn.executemany(
            "INSERT INTO payment_batch_issues (batch_id, line, kind, reason) VALUES (?,?,?,?)",
            [(batch_id, i.line, i.kind, i.reason[:500]) for i in issues],
        )

    def issues(self, batch_id: str, kind: str | None, limit: int, cursor: str | None) -> Page[BatchRowIssue]:
        after = _cursor(cursor, 0)
        if kind is None:
            rows = self.conn.execute(
                "SELECT line, kind, reason FROM payment_batch_issues WHERE batch_id = ? AND line > ? "
                "ORDER BY line LIMIT ?",
                (batch_id, after, limit + 1),
            ).fetchall()
        else:
            rows = self.conn.execute(
                "SELECT line, kind, reason FROM payment_batch_issues WHERE batch_id = ? AND kind = ? AND line > ? "
                "ORDER BY line LIMIT ?",
                (batch_id, kind, after, limit + 1),
            ).fetchall()
        items = [BatchRowIssue(r["line"], r["kind"], r["reason"]) for r in rows[:limit]]
        next_cursor = encode_cursor(items[-1].line) if len(rows) > limit else None
        return Page(items, next_cursor)

    def unfinished(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT batch_id FROM payment_batches WHERE status = 'processing' ORDER BY created_at"
        ).fetchall()
        return [str(r[0]) for r in rows]


AUDIT_COLUMNS = "seq, occurred_at, actor, action, subject_type, subject_id, details, prev_hash, hash"


def _audit(row: sqlite3.Row | tuple[object, ...]) -> AuditEntry:
    return AuditEntry(*row)


class SqliteAuditLogRepository(AuditLogRepository):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def append(self, records: Sequence[AuditRecord]) -> list[AuditEntry]:
        if not records:
            return []
        # Inside the write transaction (BEGIN IMMEDIATE), so no other writer can extend the chain
        # between reading its head and appending to it.
        head = self.conn.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
        last_seq, prev_hash = (int(head[0]), str(head[1])) if head else (0, GENESIS_HASH)
        entries = seal(records, first_seq=last_seq + 1, prev_hash=prev_hash)
        self.conn.executemany(
            f"INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
            [
                (e.seq, e.occurred_at, e.actor, e.action, e.subject_type, e.subject_id, e.details, e.prev_hash, e.hash)
                for e in entries
            ],
        )
        return entries

    def for_subject(self, subject_type: str, subject_id: str, limit: int, cursor: str | None) -> Page[AuditEntry]:
        after = _cursor(cursor, 0)
        rows = self.conn.execute(
            f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE subject_type = ? AND subject_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (subject_type, subject_id, after, limit + 1),
        ).fetchall()
        items = [_audit(tuple(r)) for r in rows[:limit]]
        next_cursor = encode_cursor(items[-1].seq) if len(rows) > limit else None
        return Page(items, next_cursor)

    def iter_all(self, batch_size: int = 5000) -> Iterator[AuditEntry]:
        last = 0
        while True:
            rows = self.conn.execute(
                f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?", (last, batch_size)
            ).fetchall()
            if not rows:
                return
            for row in rows:
                yield _audit(tuple(row))
            last = int(rows[-1][0])
