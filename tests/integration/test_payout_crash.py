"""A payout run killed with SIGKILL at any point, then run again, pays each reward exactly once and
leaves one report.

``accrue payouts run`` runs in a real subprocess on a real SQLite file. The test-only crash hook
(``ACCRUE_TEST_CRASH_AT``, honoured only with ``ACCRUE_ENV=test``) makes the process kill itself
with SIGKILL at the named point, as a power cut would: no exception handler, no cleanup.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from accrue.bootstrap import bootstrap
from accrue.domain import commands
from accrue.domain.payouts import Month
from accrue.domain.referrals import SignUpWithReferral
from accrue.service_layer.payouts import CRASH_POINTS
from tests.conftest import make_settings

pytestmark = pytest.mark.slow

REFERRERS = {"alice": 26, "bob": 7, "carol": 3}  # 36 rewards; chunks of 5 make several transactions
EXPECTED_ROWS = ["alice,465.00,26,Processed", "bob,85.00,7,Processed", "carol,30.00,3,Processed"]
CHUNK = "5"


def seed(tmp_path: Path) -> None:
    application = bootstrap(make_settings(tmp_path))
    try:
        for referrer, count in REFERRERS.items():
            member = application.bus.handle(
                commands.CreateMember(email=f"{referrer}@example.com", name=referrer, user_id=referrer)
            )
            for n in range(count):
                application.bus.handle(
                    SignUpWithReferral(user_id=f"{referrer}-{n}", referral_code=member.referral_code)
                )
    finally:
        application.close()


def payout_command(tmp_path: Path, month: str, crash_at: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCRUE_")}
    env.update(
        {
            "ACCRUE_ENV": "test",
            "ACCRUE_BLOB_DIR": str(tmp_path / "blobs"),
            "ACCRUE_INBOX_DIR": str(tmp_path / "inbox"),
            "ACCRUE_JWT_SECRET": "test-secret-for-the-suite-only-0123456789abcdef",
        }
    )
    if crash_at is not None:
        env["ACCRUE_TEST_CRASH_AT"] = crash_at
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "accrue.entrypoints.cli",
            "payouts",
            "run",
            "--month",
            month,
            "--db",
            str(tmp_path / "accrue.db"),
            "--chunk-size",
            CHUNK,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def statuses(tmp_path: Path) -> dict[str, int]:
    with sqlite3.connect(tmp_path / "accrue.db") as conn:
        return dict(conn.execute("SELECT status, COUNT(*) FROM referrals GROUP BY status").fetchall())


def reports(tmp_path: Path, month: str) -> list[Path]:
    folder = tmp_path / "blobs" / "payouts" / month
    return sorted(p for p in folder.glob("*") if not p.name.startswith(".")) if folder.exists() else []


def check_paid_exactly_once(tmp_path: Path, month: str, result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout.strip().splitlines()[-1])
    assert (run["status"], run["referrers"], run["rewards"], run["totalAmount"]) == ("completed", 3, 36, "580.00")
    with sqlite3.connect(tmp_path / "accrue.db") as conn:
        rows = conn.execute("SELECT status, payout_run_id, paid_at FROM referrals").fetchall()
        # One payout date for the whole run, even across attempts: nobody was paid in two goes.
        assert {(status, run_id) for status, run_id, _ in rows} == {("paid", f"payout-{month}")}
        assert len({paid_at for _, _, paid_at in rows}) == 1
        assert conn.execute("SELECT SUM(reward_cents) FROM referrals WHERE status = 'paid'").fetchone()[0] == 58_000
        events = conn.execute(
            "SELECT COUNT(DISTINCT event_id) FROM outbox WHERE event_name = 'PayoutCompleted'"
        ).fetchone()[0]
        assert events == 1
    files = reports(tmp_path, month)
    assert [p.name for p in files] == [f"payout-report-{month}.csv"]
    lines = files[0].read_text().splitlines()
    assert lines == ["Referrer ID,Total Amount,Referral Count,Payment Status", *EXPECTED_ROWS]


def current_month() -> str:
    return str(Month.of(datetime.now(UTC)))


@pytest.mark.parametrize("crash_at", ["before_report", "during_marking", "before_recording", "during_assigning"])
def test_a_run_killed_at_a_point_and_run_again_pays_each_reward_exactly_once(tmp_path: Path, crash_at: str) -> None:
    seed(tmp_path)
    month = current_month()

    killed = payout_command(tmp_path, month, crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    after_kill = statuses(tmp_path)
    if crash_at == "during_marking":
        assert after_kill == {"paid": 5, "pending": 31}  # the first chunk committed, the rest not
    elif crash_at == "before_recording":
        assert after_kill == {"paid": 36}  # everything marked, the run not yet recorded completed
    else:
        assert after_kill == {"pending": 36}
    if crash_at in ("during_marking", "before_recording"):
        assert len(reports(tmp_path, month)) == 1
    else:
        assert reports(tmp_path, month) == []

    check_paid_exactly_once(tmp_path, month, payout_command(tmp_path, month, None))
    # And once more: the recorded run, nothing paid again.
    check_paid_exactly_once(tmp_path, month, payout_command(tmp_path, month, None))


def test_a_run_killed_twice_in_a_row_still_finishes_once(tmp_path: Path) -> None:
    seed(tmp_path)
    month = current_month()
    for crash_at in ("during_marking", "after_report", "before_recording"):
        assert payout_command(tmp_path, month, crash_at).returncode == -signal.SIGKILL
    check_paid_exactly_once(tmp_path, month, payout_command(tmp_path, month, None))
    with sqlite3.connect(tmp_path / "accrue.db") as conn:
        assert conn.execute("SELECT attempts FROM payout_runs").fetchone()[0] == 4


def test_the_crash_hook_is_inert_outside_the_test_environment(tmp_path: Path) -> None:
    seed(tmp_path)
    month = current_month()
    env_backup = dict(os.environ)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "accrue.entrypoints.cli",
            "payouts",
            "run",
            "--month",
            month,
            "--db",
            str(tmp_path / "accrue.db"),
        ],
        env={
            **{k: v for k, v in env_backup.items() if not k.startswith("ACCRUE_")},
            "ACCRUE_ENV": "development",
            "ACCRUE_BLOB_DIR": str(tmp_path / "blobs"),
            "ACCRUE_TEST_CRASH_AT": "before_report",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    check_paid_exactly_once(tmp_path, month, result)


def test_every_crash_point_is_exercised() -> None:
    exercised = {"before_report", "during_marking", "before_recording", "during_assigning", "after_report"}
    assert exercised == set(CRASH_POINTS)
