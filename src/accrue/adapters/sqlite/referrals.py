"""SQLite repositories for referrals and payout runs."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime

from accrue.adapters.sqlite.codec import encode_cursor, iso, parse_iso
from accrue.adapters.sqlite.repositories import page_bounds
from accrue.domain.errors import ConcurrencyConflict, Conflict, NotFound
from accrue.domain.payouts import Month, PayoutLine, PayoutRun, RunPhase, RunStatus
from accrue.domain.referrals import Referral, ReferrerSummary, ReviewDecision, RewardStatus
from accrue.ports import Page, PayoutRepository, ReferralRepository

REFERRAL_COLUMNS = (
    "seq, referral_id, referrer_id, referred_id, referral_code, referral_number, reward_cents, status, "
    "payout_run_id, paid_at, review_decision, reviewed_by, reviewed_at, created_at"
)


def _optional_time(value: str | None) -> datetime | None:
    return parse_iso(value) if value else None


def _referral(row: sqlite3.Row) -> Referral:
    return Referral(
        referral_id=row["referral_id"],
        referrer_id=row["referrer_id"],
        referred_id=row["referred_id"],
        referral_code=row["referral_code"],
        referral_number=row["referral_number"],
        reward_cents=row["reward_cents"],
        status=RewardStatus(row["status"]),
        created_at=parse_iso(row["created_at"]),
        payout_run_id=row["payout_run_id"],
        paid_at=_optional_time(row["paid_at"]),
        review_decision=ReviewDecision(row["review_decision"]) if row["review_decision"] else None,
        reviewed_by=row["reviewed_by"],
        reviewed_at=_optional_time(row["reviewed_at"]),
    )


class SqliteReferralRepository(ReferralRepository):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def member_with_email_identity(self, identity: str) -> str | None:
        row = self.conn.execute(
            "SELECT user_id FROM members WHERE email_identity = ? AND erased = 0 LIMIT 1", (identity,)
        ).fetchone()
        return str(row[0]) if row else None

    def increment_referral_count(self, referrer_id: str) -> int:
        # Relative update: correct even if two writers ever raced (the UoW serialises them anyway).
        row = self.conn.execute(
            "UPDATE members SET referral_count = referral_count + 1 WHERE user_id = ? RETURNING referral_count",
            (referrer_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"referrer {referrer_id} not found", details={"field": "referralCode"})
        return int(row[0])

    def add_to_total_rewards(self, referrer_id: str, delta_cents: int) -> int:
        row = self.conn.execute(
            "UPDATE members SET referral_rewards_cents = referral_rewards_cents + ? WHERE user_id = ? "
            "RETURNING referral_rewards_cents",
            (delta_cents, referrer_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"referrer {referrer_id} not found", details={"field": "referrerId"})
        return int(row[0])

    def count_since(self, referrer_id: str, since: datetime) -> int:
        row = self.conn.execute(
            "SELECT COUNT(*) FROM referrals WHERE referrer_id = ? AND created_at >= ?", (referrer_id, iso(since))
        ).fetchone()
        return int(row[0])

    def add(self, referral: Referral) -> None:
        try:
            self.conn.execute(
                "INSERT INTO referrals (referral_id, referrer_id, referred_id, referral_code, referral_number, "
                "reward_cents, status, created_at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    referral.referral_id,
                    referral.referrer_id,
                    referral.referred_id,
                    referral.referral_code,
                    referral.referral_number,
                    referral.reward_cents,
                    str(referral.status),
                    iso(referral.created_at),
                ),
            )
        except sqlite3.IntegrityError as exc:
            if "referred_id" in str(exc):
                raise Conflict("this member was already referred", details={"field": "userId"}) from None
            raise

    def get(self, referral_id: str) -> Referral | None:
        row = self.conn.execute(
            f"SELECT {REFERRAL_COLUMNS} FROM referrals WHERE referral_id = ?", (referral_id,)
        ).fetchone()
        return _referral(row) if row else None

    def save_review(self, referral: Referral, expected_status: RewardStatus) -> None:
        cur = self.conn.execute(
            "UPDATE referrals SET status = ?, review_decision = ?, reviewed_by = ?, reviewed_at = ? "
            "WHERE referral_id = ? AND status = ?",
            (
                str(referral.status),
                str(referral.review_decision) if referral.review_decision else None,
                referral.reviewed_by,
                iso(referral.reviewed_at) if referral.reviewed_at else None,
                referral.referral_id,
                str(expected_status),
            ),
        )
        if cur.rowcount != 1:
            raise ConcurrencyConflict(f"reward {referral.referral_id} changed concurrently; retry")

    def summary(self, referrer_id: str) -> ReferrerSummary | None:
        member = self.conn.execute(
            "SELECT referral_code, referral_count, referral_rewards_cents FROM members WHERE user_id = ?",
            (referrer_id,),
        ).fetchone()
        if member is None:
            return None
        by_status = {
            row[0]: int(row[1])
            for row in self.conn.execute(
                "SELECT status, SUM(reward_cents) FROM referrals WHERE referrer_id = ? GROUP BY status",
                (referrer_id,),
            )
        }
        return ReferrerSummary(
            referrer_id=referrer_id,
            referral_code=member["referral_code"] or "",
            referral_count=int(member["referral_count"]),
            total_rewards_cents=int(member["referral_rewards_cents"]),
            pending_cents=by_status.get("pending", 0),
            held_cents=by_status.get("held", 0),
            paid_cents=by_status.get("paid", 0),
        )

    def list_for_referrer(self, referrer_id: str, limit: int, cursor: str | None) -> Page[Referral]:
        before = page_bounds(cursor)
        rows = self.conn.execute(
            f"SELECT {REFERRAL_COLUMNS} FROM referrals WHERE referrer_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
            (referrer_id, before, limit + 1),
        ).fetchall()
        next_cursor = encode_cursor(rows[limit - 1]["seq"]) if len(rows) > limit else None
        return Page([_referral(r) for r in rows[:limit]], next_cursor)

    def list_held(self, limit: int, cursor: str | None) -> Page[Referral]:
        after = page_bounds(cursor) if cursor else 0
        rows = self.conn.execute(
            f"SELECT {REFERRAL_COLUMNS} FROM referrals WHERE status = 'held' AND seq > ? ORDER BY seq LIMIT ?",
            (after, limit + 1),
        ).fetchall()
        next_cursor = encode_cursor(rows[limit - 1]["seq"]) if len(rows) > limit else None
        return Page([_referral(r) for r in rows[:limit]], next_cursor)


RUN_COLUMNS = (
    "seq, run_id, month, status, phase, cutoff_at, payout_date, report_key, report_location, referrers, rewards, "
    "total_cents, attempts, last_error, started_at, completed_at"
)


def _run(row: sqlite3.Row) -> PayoutRun:
    return PayoutRun(
        run_id=row["run_id"],
        month=Month.parse(row["month"]),
        status=RunStatus(row["status"]),
        phase=RunPhase(row["phase"]),
        cutoff=parse_iso(row["cutoff_at"]),
        payout_date=parse_iso(row["payout_date"]),
        started_at=parse_iso(row["started_at"]),
        attempts=row["attempts"],
        report_key=row["report_key"],
        report_location=row["report_location"],
        referrers=row["referrers"],
        rewards=row["rewards"],
        total_cents=row["total_cents"],
        last_error=row["last_error"],
        completed_at=_optional_time(row["completed_at"]),
    )


class SqlitePayoutRepository(PayoutRepository):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def start_run(self, run: PayoutRun) -> PayoutRun:
        now = iso(run.started_at)
        inserted = self.conn.execute(
            "INSERT INTO payout_runs (run_id, month, status, phase, cutoff_at, payout_date, started_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (month) DO NOTHING",
            (
                run.run_id,
                str(run.month),
                str(run.status),
                str(run.phase),
                iso(run.cutoff),
                iso(run.payout_date),
                now,
                now,
            ),
        ).rowcount
        if not inserted:
            self.conn.execute(
                "UPDATE payout_runs SET attempts = attempts + 1, status = 'running', updated_at = ? "
                "WHERE month = ? AND status <> 'completed'",
                (now, str(run.month)),
            )
        found = self.get_run(str(run.month))
        if found is None:  # pragma: no cover - inserted or present in this very transaction
            raise RuntimeError(f"payout run {run.month} vanished")
        return found

    def get_run(self, month: str) -> PayoutRun | None:
        row = self.conn.execute(f"SELECT {RUN_COLUMNS} FROM payout_runs WHERE month = ?", (month,)).fetchone()
        return _run(row) if row else None

    def list_runs(self, limit: int, cursor: str | None) -> Page[PayoutRun]:
        # The cursor is the last month shown, as the number YYYYMM; the next page continues below it.
        below = page_bounds(cursor) if cursor else 999_999
        rows = self.conn.execute(
            f"SELECT {RUN_COLUMNS} FROM payout_runs WHERE month < ? ORDER BY month DESC LIMIT ?",
            (f"{below // 100:04d}-{below % 100:02d}", limit + 1),
        ).fetchall()
        runs = [_run(r) for r in rows[:limit]]
        last = runs[-1].month if runs else None
        next_cursor = encode_cursor(last.year * 100 + last.month) if last and len(rows) > limit else None
        return Page(runs, next_cursor)

    def _release_cache(self) -> None:
        # A run walks every reward once: cached pages of earlier chunks are never read again, and the
        # connection's page cache (tens of MiB) would fill with them. Dropping the clean pages between
        # chunks keeps the run's memory flat whatever the number of rewards.
        self.conn.execute("PRAGMA shrink_memory")

    def assign_chunk(self, run_id: str, cutoff: datetime, limit: int) -> int:
        self._release_cache()
        # The oldest unclaimed rewards, while the run is still assigning: once its set is frozen (the
        # report may be written from it) no reward may join, whichever process runs the month.
        # Evaluated twice in this transaction (writers are serialised), it names the same rewards.
        chunk = (
            "SELECT seq FROM referrals INDEXED BY referrals_unclaimed"
            " WHERE status = 'pending' AND payout_run_id IS NULL AND created_at < ?2"
            " ORDER BY created_at LIMIT ?3"
        )
        assigning = "EXISTS (SELECT 1 FROM payout_runs WHERE run_id = ?1 AND phase = 'assigning')"
        params = (run_id, iso(cutoff), limit)
        self.conn.execute(
            "INSERT INTO payout_lines (run_id, referrer_id, total_cents, rewards)"
            f" SELECT ?1, referrer_id, SUM(reward_cents), COUNT(*) FROM referrals WHERE seq IN ({chunk})"
            f" AND {assigning} GROUP BY referrer_id"
            " ON CONFLICT (run_id, referrer_id) DO UPDATE SET"
            " total_cents = total_cents + excluded.total_cents, rewards = rewards + excluded.rewards",
            params,
        )
        cur = self.conn.execute(
            f"UPDATE referrals SET payout_run_id = ?1 WHERE seq IN ({chunk}) AND {assigning}", params
        )
        return cur.rowcount

    def finish_assigning(self, run_id: str, now: datetime) -> None:
        self.conn.execute(
            "UPDATE payout_runs SET phase = 'reporting', updated_at = ? WHERE run_id = ? AND phase = 'assigning'",
            (iso(now), run_id),
        )

    def iter_lines(self, run_id: str) -> Iterator[PayoutLine]:
        # One row per referrer, in primary-key order: streamed as SQLite produces them.
        cursor = self.conn.execute(
            "SELECT referrer_id, total_cents, rewards FROM payout_lines WHERE run_id = ? ORDER BY referrer_id",
            (run_id,),
        )
        try:
            for n, (referrer_id, total, count) in enumerate(cursor, 1):
                yield PayoutLine(referrer_id, int(total), int(count))
                if n % 2000 == 0:
                    self._release_cache()
        finally:
            cursor.close()

    def record_report(
        self,
        run_id: str,
        report_key: str,
        location: str,
        referrers: int,
        rewards: int,
        total_cents: int,
        now: datetime,
    ) -> None:
        self.conn.execute(
            "UPDATE payout_runs SET report_key = ?, report_location = ?, referrers = ?, rewards = ?, total_cents = ?, "
            "phase = CASE WHEN phase = 'reporting' THEN 'marking' ELSE phase END, updated_at = ? WHERE run_id = ?",
            (report_key, location, referrers, rewards, total_cents, iso(now), run_id),
        )

    def mark_paid_chunk(self, run_id: str, paid_at: datetime, limit: int) -> int:
        self._release_cache()
        cur = self.conn.execute(
            "UPDATE referrals SET status = 'paid', paid_at = ?1 WHERE seq IN ("
            "  SELECT seq FROM referrals INDEXED BY referrals_to_pay"
            "  WHERE payout_run_id = ?2 AND status = 'pending' LIMIT ?3)",
            (iso(paid_at), run_id, limit),
        )
        return cur.rowcount

    def complete(self, run_id: str, now: datetime) -> bool:
        cur = self.conn.execute(
            "UPDATE payout_runs SET status = 'completed', phase = 'done', completed_at = ?, last_error = NULL, "
            "updated_at = ? WHERE run_id = ? AND status <> 'completed'",
            (iso(now), iso(now), run_id),
        )
        return cur.rowcount == 1

    def record_failure(self, run_id: str, error: str, now: datetime) -> None:
        self.conn.execute(
            "UPDATE payout_runs SET status = 'failed', last_error = ?, updated_at = ? "
            "WHERE run_id = ? AND status <> 'completed'",
            (error[:2000], iso(now), run_id),
        )
