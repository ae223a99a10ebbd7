"""GDPR on the SQLite store: a member's records across every feature's tables, and their erasure.

Export reads the tables listed in ``HOLDINGS`` (a feature that stores member data adds a line).

Erasure sweeps every table the schema has, not a fixed list, so a feature that forgets to say it
stores personal data is still covered: a row is *linked* to the member when one of its member
columns holds the member's id, or when a text column contains the member's email, phone number
or id (as a JSON string); the member's email, name and phone are then blanked out of that row's
text (``ErasureSubject.scrub``). Rows of other members are never touched. Tables that are
immutable by design (the ledger, the audit log) are not swept; ``remaining`` reports any personal
value that is still stored anywhere.

Erased bytes must not survive on disk either: every connection runs with ``secure_delete`` (freed
space and pages are zeroed) and ``purge_freed_storage`` checkpoints and truncates the WAL, whose
older frames would otherwise still hold the pages as they were before the erasure.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from pydantic.alias_generators import to_camel

from accrue.adapters.sqlite.codec import loads
from accrue.adapters.sqlite.database import Database
from accrue.domain.gdpr import ErasureSubject
from accrue.ports import PersonalDataRepository


@dataclass(frozen=True, slots=True)
class Holding:
    """Where one export section's records live."""

    section: str
    table: str
    where: str  # every ``?`` is the member's id
    json_columns: tuple[str, ...] = ()


HOLDINGS: tuple[Holding, ...] = (
    Holding("orders", "orders", "user_id = ?", ("items",)),
    Holding("notifications", "notifications", "user_id = ?", ("message", "milestones", "data")),
    Holding("preferences", "notification_preferences", "user_id = ?"),
    Holding("notificationDeliveries", "notification_sends", "user_id = ?"),
    Holding("channelMessages", "local_channel_outbox", "user_id = ?"),
    Holding("referrals", "referrals", "referrer_id = ? OR referred_id = ?"),
    Holding("payouts", "payout_lines", "referrer_id = ?"),
    Holding("payments", "payments", "user_id = ?"),
    Holding("webhookEvents", "webhook_events", "member_id = ?"),
    Holding("webhookDeliveries", "webhook_deliveries", "member_id = ?", ("payload",)),
)

# Tables with a member column that the export covers through the ports instead: the profile, the
# ledger, and the campaign accounts' running totals (a projection of the ledger).
EXPORTED_THROUGH_PORTS = frozenset({"members", "transfers", "campaign_account_totals"})
# Columns that hold a member's id.
MEMBER_COLUMNS = frozenset({"user_id", "member_id", "referrer_id", "referred_id"})
# Not swept: the member row changes through its aggregate; the ledger and the audit log are
# immutable by design (triggers refuse updates) and hold ids, never personal values.
NOT_SWEPT = frozenset({"members", "transfers", "audit_log", "schema_migrations"})
# Tables whose rows only exist for the member (their choices; messages sent to their address):
# deleted rather than blanked.
DELETED_ON_ERASURE = {"notification_preferences": "user_id", "local_channel_outbox": "user_id"}
# Columns the export leaves out: internal row numbers and leases mean nothing to the member.
INTERNAL_COLUMNS = frozenset({"seq", "dedupe_key", "next_attempt_at", "lease_until", "version"})


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class _Table:
    name: str
    key_columns: tuple[str, ...]  # ("rowid",) or the primary key of a WITHOUT ROWID table
    text_columns: tuple[str, ...]
    member_columns: tuple[str, ...]


def _tables(conn: sqlite3.Connection) -> list[_Table]:
    found: list[_Table] = []
    for row in conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ):
        name, sql = row[0], row[1] or ""
        columns = conn.execute(f"PRAGMA table_info({_quote(name)})").fetchall()
        text = tuple(
            c["name"]
            for c in columns
            if (c["type"] or "").upper() in ("", "TEXT", "BLOB") or "CHAR" in (c["type"] or "").upper()
        )
        pk = tuple(c["name"] for c in sorted(columns, key=lambda c: c["pk"]) if c["pk"])
        keys = pk if "WITHOUT ROWID" in sql.upper() else ("rowid",)
        members = tuple(c["name"] for c in columns if c["name"] in MEMBER_COLUMNS)
        found.append(_Table(name, keys, text, members))
    return found


def _decode_row(row: sqlite3.Row, json_columns: tuple[str, ...]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key in row.keys():  # noqa: SIM118 - sqlite3.Row is not a mapping
        if key in INTERNAL_COLUMNS:
            continue
        value = row[key]
        if key in json_columns and isinstance(value, str | bytes):
            value = loads(value)
        elif isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        record[to_camel(key)] = value
    return record


class SqlitePersonalDataRepository(PersonalDataRepository):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def _existing(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def export(self, user_id: str) -> dict[str, list[dict[str, Any]]]:
        existing = self._existing()
        sections: dict[str, list[dict[str, Any]]] = {}
        for holding in HOLDINGS:
            records = sections.setdefault(holding.section, [])
            if holding.table not in existing:
                continue  # a feature that is not installed holds nothing
            params = (user_id,) * holding.where.count("?")
            order = "seq" if "seq" in self._columns(holding.table) else "rowid"
            rows = self.conn.execute(
                f"SELECT * FROM {_quote(holding.table)} WHERE {holding.where} ORDER BY {order}", params
            ).fetchall()
            records.extend(_decode_row(r, holding.json_columns) for r in rows)
        return sections

    def _columns(self, table: str) -> set[str]:
        return {r["name"] for r in self.conn.execute(f"PRAGMA table_info({_quote(table)})")}

    def erase(self, subject: ErasureSubject) -> dict[str, int]:
        # Zero freed space as rows shrink or go, whatever the compile-time default is.
        self.conn.execute("PRAGMA secure_delete = ON")
        changed: dict[str, int] = {}
        for table_name, column in DELETED_ON_ERASURE.items():
            if table_name in self._existing():
                cur = self.conn.execute(
                    f"DELETE FROM {_quote(table_name)} WHERE {_quote(column)} = ?", (subject.user_id,)
                )
                if cur.rowcount:
                    changed[table_name] = cur.rowcount
        terms = subject.link_terms()
        for table in _tables(self.conn):
            if table.name in NOT_SWEPT:
                continue
            scrubbed = [c for c in table.text_columns if c not in MEMBER_COLUMNS]
            if not scrubbed:
                continue
            conditions = [f"{_quote(c)} = ?" for c in table.member_columns]
            params: list[str] = [subject.user_id] * len(table.member_columns)
            for column in scrubbed:
                for term in terms:
                    conditions.append(f"instr({_quote(column)}, ?) > 0")
                    params.append(term)
            keys = ", ".join(_quote(k) if k != "rowid" else "rowid" for k in table.key_columns)
            selected = ", ".join(_quote(c) for c in scrubbed)
            rows = self.conn.execute(
                f"SELECT {keys}, {selected} FROM {_quote(table.name)} WHERE {' OR '.join(conditions)}", params
            ).fetchall()
            count = 0
            for row in rows:
                key_values = tuple(row[: len(table.key_columns)])
                updates: dict[str, Any] = {}
                for column, value in zip(scrubbed, row[len(table.key_columns) :], strict=True):
                    if isinstance(value, str):
                        new: Any = subject.scrub(value)
                    elif isinstance(value, bytes):
                        new = subject.scrub(value.decode("utf-8", errors="surrogateescape")).encode(
                            "utf-8", errors="surrogateescape"
                        )
                    else:
                        continue
                    if new != value:
                        updates[column] = new
                if updates:
                    assignments = ", ".join(f"{_quote(c)} = ?" for c in updates)
                    where = " AND ".join(f"{_quote(k) if k != 'rowid' else 'rowid'} = ?" for k in table.key_columns)
                    self.conn.execute(
                        f"UPDATE {_quote(table.name)} SET {assignments} WHERE {where}",
                        (*updates.values(), *key_values),
                    )
                    count += 1
            if count:
                changed[table.name] = changed.get(table.name, 0) + count
        return changed

    def remaining(self, subject: ErasureSubject) -> list[str]:
        found: list[str] = []
        values = [v.lower() for v in subject.personal_values if len(v) >= 3]
        if not values:
            return found
        for table in _tables(self.conn):
            for column in table.text_columns:
                conditions = " OR ".join(f"instr(lower(CAST({_quote(column)} AS TEXT)), ?) > 0" for _ in values)
                hit = self.conn.execute(
                    f"SELECT 1 FROM {_quote(table.name)} WHERE {conditions} LIMIT 1", values
                ).fetchone()
                if hit:
                    found.append(f"{table.name}.{column}")
        return found


def purge_freed_storage(database: Database, attempts: int = 20, pause_seconds: float = 0.1) -> bool:
    """Checkpoint the WAL into the database file and truncate it to zero bytes, so frames written
    before an erasure (the pages as they were) are gone from disk.

    A reader still using old frames makes the checkpoint report "busy"; each try waits at most
    200 ms for it (not the connection's long busy timeout, while holding the writer lock), so
    writers are never held up for long. True when the WAL was truncated.
    """
    conn = database.connection()
    conn.execute("PRAGMA busy_timeout = 200")
    try:
        for _ in range(attempts):
            with database.write_lock:
                busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if busy == 0:
                return True
            time.sleep(pause_seconds)
        return False
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(database.busy_timeout_ms)}")
