"""SQLite repositories for the loyalty core."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from decimal import Decimal

from accrue.adapters.sqlite.codec import decode_cursor, dumps, encode_cursor, iso, loads, parse_iso
from accrue.domain.errors import ConcurrencyConflict, Conflict, InvalidInput
from accrue.domain.ledger import Reason, Transfer
from accrue.domain.loyalty import Tier
from accrue.domain.members import Member, normalize_email
from accrue.domain.notifications import Notification
from accrue.domain.orders import LineItem, Order
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


def page_bounds(cursor: str | None) -> int:
    try:
        seq = decode_cursor(cursor)
    except ValueError:
        raise InvalidInput("cursor", "is not a cursor this service issued") from None
    return seq if seq is not None else 2**62


# Named, not ``*``: ``*`` also computes the table's generated column (email_identity) on every read.
MEMBER_COLUMNS = (
    "user_id, email, name, phone, created_at, balance, lifetime, tier, total_spent_cents, referral_code, erased, "
    "version"
)


def _member(row: sqlite3.Row) -> Member:
    """A member from a row of MEMBER_COLUMNS (read by position: cheaper than by name)."""
    return Member(
        user_id=row[0],
        email=row[1],
        name=row[2],
        phone=row[3],
        created_at=parse_iso(row[4]),
        balance=row[5],
        lifetime=row[6],
        tier=Tier(row[7]),
        total_spent_cents=row[8],
        referral_code=row[9] or "",
        erased=bool(row[10]),
        version=row[11],
    )


def _identity(member: Member) -> tuple[object, ...]:
    """What a member's contact details are; see ``SqliteMemberRepository.save_all``."""
    return (member.email, member.name, member.phone, member.erased)


TRANSFER_COLUMNS = (
    "transfer_id, debit_account, credit_account, amount, reason, reference, member_id, "
    "member_delta, balance_after, created_at"
)


def transfer_row(t: Transfer) -> tuple[object, ...]:
    return (
        t.transfer_id,
        t.debit_account,
        t.credit_account,
        t.amount,
        str(t.reason),
        t.reference,
        t.member_id,
        t.member_delta,
        t.balance_after,
        iso(t.created_at),
    )


def _transfer(row: sqlite3.Row) -> Transfer:
    return Transfer(
        transfer_id=row["transfer_id"],
        debit_account=row["debit_account"],
        credit_account=row["credit_account"],
        amount=row["amount"],
        reason=Reason(row["reason"]),
        reference=row["reference"],
        member_id=row["member_id"],
        balance_after=row["balance_after"],
        created_at=parse_iso(row["created_at"]),
        member_delta=row["member_delta"],
    )


class SqliteMemberRepository(MemberRepository):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        # Contact details as read or written by this repository, by member id: a member whose
        # details are unchanged is saved by an UPDATE of its points only, which leaves the indexes
        # on the e-mail (two of them) alone: a posting then writes two pages fewer.
        self._stored: dict[str, tuple[object, ...]] = {}

    def _remember(self, member: Member) -> Member:
        self._stored[member.user_id] = _identity(member)
        return member

    def add(self, member: Member) -> None:
        try:
            self.conn.execute(
                "INSERT INTO members (user_id, email, email_key, name, phone, balance, lifetime, tier, "
                "total_spent_cents, referral_code, version, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    member.user_id,
                    member.email,
                    normalize_email(member.email) if member.email else None,
                    member.name,
                    member.phone,
                    member.balance,
                    member.lifetime,
                    str(member.tier),
                    member.total_spent_cents,
                    member.referral_code or None,
                    member.version,
                    iso(member.created_at),
                ),
            )
        except sqlite3.IntegrityError as exc:
            text = str(exc)
            if "email_key" in text:
                raise Conflict("a member with this email already exists", details={"field": "email"}) from None
            if "referral_code" in text:
                raise Conflict("referral code collision", details={"field": "referralCode"}) from None
            raise Conflict("a member with this userId already exists", details={"field": "userId"}) from None
        self._remember(member)
        self._append(member.new_transfers)

    def get(self, user_id: str) -> Member | None:
        row = self.conn.execute(f"SELECT {MEMBER_COLUMNS} FROM members WHERE user_id = ?", (user_id,)).fetchone()
        return self._remember(_member(row)) if row else None

    def get_by_email(self, email: str) -> Member | None:
        row = self.conn.execute(
            f"SELECT {MEMBER_COLUMNS} FROM members WHERE email_key = ?", (normalize_email(email),)
        ).fetchone()
        return self._remember(_member(row)) if row else None

    def get_by_referral_code(self, code: str) -> Member | None:
        row = self.conn.execute(
            f"SELECT {MEMBER_COLUMNS} FROM members WHERE referral_code = ?", (code.strip().upper(),)
        ).fetchone()
        return self._remember(_member(row)) if row else None

    def get_many(self, user_ids: Sequence[str]) -> list[Member]:
        found: list[Member] = []
        for start in range(0, len(user_ids), 500):
            part = list(user_ids[start : start + 500])
            marks = ",".join("?" * len(part))
            rows = self.conn.execute(f"SELECT {MEMBER_COLUMNS} FROM members WHERE user_id IN ({marks})", part)
            found.extend(self._remember(_member(r)) for r in rows)
        return found

    _UPDATE = (
        "UPDATE members SET email = ?, email_key = ?, name = ?, phone = ?, balance = ?, lifetime = ?, "
        "tier = ?, total_spent_cents = ?, erased = ?, version = version + 1 "
        "WHERE user_id = ? AND version = ?"
    )

    _UPDATE_POINTS = (
        "UPDATE members SET balance = ?, lifetime = ?, tier = ?, total_spent_cents = ?, version = version + 1 "
        "WHERE user_id = ? AND version = ?"
    )

    @staticmethod
    def _points_params(member: Member) -> tuple[object, ...]:
        return (
            member.balance,
            member.lifetime,
            str(member.tier),
            member.total_spent_cents,
            member.user_id,
            member.version,
        )

    @staticmethod
    def _update_params(member: Member) -> tuple[object, ...]:
        return (
            member.email,
            normalize_email(member.email) if member.email and not member.erased else None,
            member.name,
            member.phone,
            member.balance,
            member.lifetime,
            str(member.tier),
            member.total_spent_cents,
            int(member.erased),
            member.user_id,
            member.version,
        )

    def save(self, member: Member) -> None:
        self.save_all([member])

    def save_all(self, members: Sequence[Member]) -> None:
        """UPDATE statements for all (version-guarded), then one INSERT for all their new transfers.

        A member whose contact details are as this repository read them gets the narrow UPDATE of
        its points (most writes: postings); any other the full one."""
        if not members:
            return
        stored = self._stored
        points_only: list[Member] = []
        everything: list[Member] = []
        for member in members:
            (points_only if stored.get(member.user_id) == _identity(member) else everything).append(member)
        try:
            saved = 0
            if points_only:
                saved += self.conn.executemany(
                    self._UPDATE_POINTS, [self._points_params(m) for m in points_only]
                ).rowcount
            if everything:
                saved += self.conn.executemany(self._UPDATE, [self._update_params(m) for m in everything]).rowcount
        except sqlite3.IntegrityError as exc:
            # A changed e-mail that another member holds (found by the adapter contract suite).
            if "email_key" not in str(exc):
                raise
            raise Conflict("a member with this email already exists", details={"field": "email"}) from None
        if saved != len(members):
            names = ", ".join(m.user_id for m in members[:5])
            raise ConcurrencyConflict(f"member {names} changed concurrently; retry")
        for member in members:
            member.version += 1
            stored[member.user_id] = _identity(member)
        self._append([t for m in members for t in m.new_transfers])

    def _append(self, transfers: Sequence[Transfer]) -> None:
        if not transfers:
            return
        try:
            self.conn.executemany(
                f"INSERT INTO transfers ({TRANSFER_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [transfer_row(t) for t in transfers],
            )
        except sqlite3.IntegrityError as exc:
            raise Conflict("a transfer with this id was already posted", details={"error": str(exc)}) from None

    def iter_ids(self, batch_size: int = 500) -> Iterator[str]:
        last = ""
        while True:
            rows = self.conn.execute(
                "SELECT user_id FROM members WHERE user_id > ? ORDER BY user_id LIMIT ?",
                (last, batch_size),
            ).fetchall()
            if not rows:
                return
            for row in rows:
                yield row[0]
            last = rows[-1][0]


class SqliteLedgerRepository(LedgerRepository):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get(self, transfer_id: str) -> Transfer | None:
        row = self.conn.execute(
            f"SELECT seq, {TRANSFER_COLUMNS} FROM transfers WHERE transfer_id = ?", (transfer_id,)
        ).fetchone()
        return _transfer(row) if row else None

    def history(self, member_id: str, limit: int, cursor: str | None) -> Page[Transfer]:
        before = page_bounds(cursor)
        rows = self.conn.execute(
            f"SELECT seq, {TRANSFER_COLUMNS} FROM transfers WHERE member_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
            (member_id, before, limit + 1),
        ).fetchall()
        next_cursor = encode_cursor(rows[limit - 1]["seq"]) if len(rows) > limit else None
        return Page([_transfer(r) for r in rows[:limit]], next_cursor)

    def existing_ids(self, transfer_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(transfer_ids), 500):
            part = list(transfer_ids[start : start + 500])
            marks = ",".join("?" * len(part))
            found.update(
                r[0]
                for r in self.conn.execute(f"SELECT transfer_id FROM transfers WHERE transfer_id IN ({marks})", part)
            )
        return found

    def append_many(self, transfers: Sequence[Transfer]) -> None:
        self.conn.executemany(
            f"INSERT INTO transfers ({TRANSFER_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [transfer_row(t) for t in transfers],
        )

    def check(self) -> list[str]:
        problems: list[str] = []
        total = self.conn.execute("SELECT COALESCE(SUM(amount), 0) FROM transfers").fetchone()[0]
        # Each transfer debits one account and credits another by the same amount: double entry holds
        # by construction; what can drift is a stored balance. Compare each member with its postings.
        rows = self.conn.execute(
            """
            SELECT m.user_id, m.balance,
                   COALESCE((SELECT SUM(member_delta) FROM transfers t WHERE t.member_id = m.user_id), 0)
                       AS posted,
                   COALESCE((SELECT balance_after FROM transfers t WHERE t.member_id = m.user_id
                             ORDER BY seq DESC LIMIT 1), 0) AS last_balance
            FROM members m
            """
        ).fetchall()
        for row in rows:
            if row["balance"] != row["posted"]:
                problems.append(
                    f"member {row['user_id']}: stored balance {row['balance']} != sum of postings {row['posted']}"
                )
            if row["balance"] != row["last_balance"]:
                problems.append(
                    f"member {row['user_id']}: stored balance {row['balance']} != last resulting balance "
                    f"{row['last_balance']}"
                )
        accounts = self.conn.execute(
            """
            SELECT account, SUM(delta) AS balance FROM (
                SELECT credit_account AS account, amount AS delta FROM transfers
                UNION ALL SELECT debit_account, -amount FROM transfers)
            GROUP BY account
            """
        ).fetchall()
        if sum(r["balance"] for r in accounts) != 0:
            problems.append("the ledger does not balance: accounts do not sum to zero")
        for r in accounts:
            if r["account"].startswith("member:") and r["balance"] < 0:
                problems.append(f"account {r['account']} is negative ({r['balance']})")
        del total
        return problems


def _order(row: sqlite3.Row) -> Order:
    items = tuple(
        LineItem(
            sku=i["sku"],
            quantity=i["quantity"],
            price=Decimal(i["price"]),
            category=i.get("category"),
        )
        for i in loads(row["items"])
    )
    return Order(
        order_id=row["order_id"],
        user_id=row["user_id"],
        amount=Decimal(row["amount"]),
        currency=row["currency"],
        amount_minor=row["amount_minor"],
        status=row["status"],
        points_earned=row["points_earned"],
        created_at=parse_iso(row["created_at"]),
        items=items,
        source=row["source"],
    )


class SqliteOrderRepository(OrderRepository):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(self, order: Order) -> None:
        items = [
            {"sku": i.sku, "quantity": i.quantity, "price": str(i.price), "category": i.category} for i in order.items
        ]
        try:
            self.conn.execute(
                "INSERT INTO orders (order_id, user_id, amount, currency, amount_minor, status, points_earned, "
                "items, source, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    order.order_id,
                    order.user_id,
                    str(order.amount),
                    order.currency,
                    order.amount_minor,
                    order.status,
                    order.points_earned,
                    dumps(items),
                    order.source,
                    iso(order.created_at),
                ),
            )
        except sqlite3.IntegrityError:
            raise Conflict("an order with this orderId already exists", details={"field": "orderId"}) from None

    def get(self, order_id: str) -> Order | None:
        row = self.conn.execute("SELECT * FROM orders WHERE order_id = ?", (order_id,)).fetchone()
        return _order(row) if row else None

    def list(self, user_id: str | None, status: str | None, limit: int, cursor: str | None) -> Page[Order]:
        before = page_bounds(cursor)
        clauses, params = ["seq < ?"], [before]
        if user_id is not None:
            clauses.append("user_id = ?")
            params.append(user_id)  # type: ignore[arg-type]
        if status is not None:
            clauses.append("status = ?")
            params.append(status)  # type: ignore[arg-type]
        rows = self.conn.execute(
            f"SELECT * FROM orders WHERE {' AND '.join(clauses)} ORDER BY seq DESC LIMIT ?",
            (*params, limit + 1),
        ).fetchall()
        next_cursor = encode_cursor(rows[limit - 1]["seq"]) if len(rows) > limit else None
        return Page([_order(r) for r in rows[:limit]], next_cursor)

    def count_for_user(self, user_id: str) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM orders WHERE user_id = ?", (user_id,)).fetchone()[0])


def notification_from_row(row: sqlite3.Row) -> Notification:
    return Notification(
        notification_id=row["notification_id"],
        event_id=row["event_id"],
        type=row["type"],
        user_id=row["user_id"],
        subject=row["subject"],
        message=loads(row["message"]),
        created_at=parse_iso(row["created_at"]),
        old_tier=row["old_tier"],
        new_tier=row["new_tier"],
        milestones=tuple(loads(row["milestones"])),
        data=loads(row["data"]),
    )


class SqliteNotificationRepository(NotificationRepository):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(self, notification: Notification, dedupe_key: str, *, queue: bool = True) -> bool:
        cur = self.conn.execute(
            "INSERT INTO notifications (notification_id, dedupe_key, event_id, type, user_id, subject, message, "
            "old_tier, new_tier, milestones, data, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT (dedupe_key) DO NOTHING",
            (
                notification.notification_id,
                dedupe_key,
                notification.event_id,
                notification.type,
                notification.user_id,
                notification.subject,
                dumps(notification.message),
                notification.old_tier,
                notification.new_tier,
                dumps(list(notification.milestones)),
                dumps(notification.data),
                iso(notification.created_at),
            ),
        )
        if cur.rowcount != 1:
            return False
        if queue:
            self.conn.execute(
                "INSERT INTO notification_queue (notification_id, queued_at) VALUES (?, ?) "
                "ON CONFLICT (notification_id) DO NOTHING",
                (notification.notification_id, iso(notification.created_at)),
            )
        return True

    def list(self, user_id: str | None, limit: int, cursor: str | None) -> Page[Notification]:
        before = page_bounds(cursor)
        if user_id is None:
            rows = self.conn.execute(
                "SELECT * FROM notifications WHERE seq < ? ORDER BY seq DESC LIMIT ?",
                (before, limit + 1),
            ).fetchall()
        else:
            rows = self.conn.execute(
                "SELECT * FROM notifications WHERE user_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                (user_id, before, limit + 1),
            ).fetchall()
        next_cursor = encode_cursor(rows[limit - 1]["seq"]) if len(rows) > limit else None
        return Page([notification_from_row(r) for r in rows[:limit]], next_cursor)


class SqliteImportRepository(ImportRepository):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def start(self, file_sha256: str, file_name: str, now: datetime) -> tuple[str, int]:
        self.conn.execute(
            "INSERT INTO point_imports (file_sha256, file_name, status, started_at) VALUES (?,?,'running',?) "
            "ON CONFLICT (file_sha256) DO NOTHING",
            (file_sha256, file_name, iso(now)),
        )
        row = self.conn.execute(
            "SELECT status, rows_done FROM point_imports WHERE file_sha256 = ?", (file_sha256,)
        ).fetchone()
        return str(row["status"]), int(row["rows_done"])

    def record_progress(self, file_sha256: str, last_line: int, awarded: int, skipped: int, now: datetime) -> None:
        self.conn.execute(
            "UPDATE point_imports SET rows_done = MAX(rows_done, ?), rows_awarded = rows_awarded + ?, "
            "rows_skipped = rows_skipped + ? WHERE file_sha256 = ?",
            (last_line, awarded, skipped, file_sha256),
        )

    def lines_done(self, file_sha256: str) -> int | None:
        row = self.conn.execute("SELECT rows_done FROM point_imports WHERE file_sha256 = ?", (file_sha256,)).fetchone()
        return int(row[0]) if row else None

    def finish(self, file_sha256: str, now: datetime) -> None:
        self.conn.execute(
            "UPDATE point_imports SET status = 'completed', finished_at = ? WHERE file_sha256 = ?",
            (iso(now), file_sha256),
        )


class SqliteScheduleRunRepository(ScheduleRunRepository):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def last_fire(self, name: str) -> datetime | None:
        row = self.conn.execute("SELECT last_fire_at FROM schedule_runs WHERE name = ?", (name,)).fetchone()
        return parse_iso(row[0]) if row else None

    def record(self, name: str, fire_at: datetime, status: str, error: str | None) -> None:
        self.conn.execute(
            "INSERT INTO schedule_runs (name, last_fire_at, last_status, last_error) VALUES (?,?,?,?) "
            "ON CONFLICT (name) DO UPDATE SET last_fire_at = excluded.last_fire_at, "
            "last_status = excluded.last_status, last_error = excluded.last_error",
            (name, iso(fire_at), status, error),
        )


def _outbox(row: sqlite3.Row) -> OutboxMessage:
    return OutboxMessage(
        message_id=row["message_id"],
        event_id=row["event_id"],
        event_name=row["event_name"],
        handler=row["handler"],
        payload=loads(row["payload"]),
        attempts=row["attempts"],
        status=row["status"],
        last_error=row["last_error"],
        created_at=parse_iso(row["created_at"]),
    )


class SqliteOutboxRepository(OutboxRepository):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(self, event_id: str, event_name: str, handler: str, payload: str, now: datetime) -> None:
        self.conn.execute(
            "INSERT INTO outbox (event_id, event_name, handler, payload, available_at, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT (event_id, handler) DO NOTHING",
            (event_id, event_name, handler, payload, now.timestamp(), iso(now), iso(now)),
        )

    def add_many(self, rows: Sequence[tuple[str, str, str, str]], now: datetime) -> None:
        """(event_id, event_name, handler, payload) rows, all due now."""
        at, text = now.timestamp(), iso(now)
        self.conn.executemany(
            "INSERT INTO outbox (event_id, event_name, handler, payload, available_at, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT (event_id, handler) DO NOTHING",
            [(*row, at, text, text) for row in rows],
        )

    def claim_due(self, now: datetime, limit: int, lease_seconds: float) -> list[OutboxMessage]:
        messages = self.due(now, limit)
        if messages:
            self.conn.executemany(
                "UPDATE outbox SET available_at = ? WHERE message_id = ?",
                [(now.timestamp() + lease_seconds, m.message_id) for m in messages],
            )
        return messages

    def due(self, now: datetime, limit: int) -> list[OutboxMessage]:
        # In the order of the partial index outbox_due (due time, then message id): no sort.
        rows = self.conn.execute(
            "SELECT * FROM outbox WHERE status = 'pending' AND available_at <= ? ORDER BY available_at, message_id "
            "LIMIT ?",
            (now.timestamp(), limit),
        ).fetchall()
        return [_outbox(r) for r in rows]

    def get(self, message_id: int) -> OutboxMessage | None:
        row = self.conn.execute("SELECT * FROM outbox WHERE message_id = ?", (message_id,)).fetchone()
        return _outbox(row) if row else None

    def mark_done(self, message_id: int) -> None:
        self.conn.execute(
            "UPDATE outbox SET status = 'done', attempts = attempts + 1, last_error = NULL, updated_at = ? "
            "WHERE message_id = ?",
            (iso_now(), message_id),
        )

    def mark_failed(self, message_id: int, error: str, retry_at: datetime | None) -> None:
        if retry_at is None:
            self.conn.execute(
                "UPDATE outbox SET status = 'dead', attempts = attempts + 1, last_error = ?, updated_at = ? "
                "WHERE message_id = ?",
                (error[:2000], iso_now(), message_id),
            )
        else:
            self.conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, available_at = ?, updated_at = ? "
                "WHERE message_id = ?",
                (error[:2000], retry_at.timestamp(), iso_now(), message_id),
            )

    def dead_letters(self, limit: int) -> list[OutboxMessage]:
        rows = self.conn.execute(
            "SELECT * FROM outbox WHERE status = 'dead' ORDER BY message_id LIMIT ?", (limit,)
        ).fetchall()
        return [_outbox(r) for r in rows]

    def redrive(self, message_id: int, now: datetime) -> bool:
        cur = self.conn.execute(
            "UPDATE outbox SET status = 'pending', attempts = 0, available_at = ?, updated_at = ? "
            "WHERE message_id = ? AND status = 'dead'",
            (now.timestamp(), iso(now), message_id),
        )
        return cur.rowcount == 1

    def pending_count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM outbox WHERE status = 'pending'").fetchone()[0])


def iso_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
