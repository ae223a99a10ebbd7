"""`accrue points import` killed with SIGKILL part-way, then run again: every row awarded exactly once."""

from __future__ import annotations

import csv
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from accrue.bootstrap import bootstrap
from accrue.service_layer.handlers import enrol
from tests.cli_support import ledger_check
from tests.conftest import make_settings, server_env

pytestmark = pytest.mark.slow

MEMBERS = 500
ROWS = 200_000


def enrol_members(db: Path, tmp_path: Path) -> list[str]:
    application = bootstrap(make_settings(tmp_path, db=db))
    ids = [f"bulk-{n:04d}" for n in range(MEMBERS)]
    try:
        with application.bus.uow_factory() as uow:
            for user_id in ids:
                enrol(
                    uow,
                    user_id=user_id,
                    email=f"{user_id}@example.com",
                    name=user_id,
                    phone=None,
                    now=application.clock(),
                    welcome_bonus_points=0,
                )
            uow.commit()
    finally:
        application.close()
    return ids


def write_file(path: Path, ids: list[str]) -> tuple[Counter[str], int, int]:
    """The CSV, the points each member should receive, the number of good rows and of bad rows."""
    expected: Counter[str] = Counter()
    good = bad = 0
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["userId", "points", "reason"])
        for n in range(ROWS):
            if n % 10_000 == 7:
                writer.writerow(["nobody-here", "5", "unknown member"])
                bad += 1
            elif n % 10_000 == 8:
                writer.writerow([ids[0], "-3", "negative points"])
                bad += 1
            else:
                user_id, points = ids[n % len(ids)], 1 + n % 50
                writer.writerow([user_id, str(points), "spring campaign"])
                expected[user_id] += points
                good += 1
    return expected, good, bad


def run_import(path: Path, db: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "accrue.entrypoints.cli", "points", "import", str(path), "--db", str(db)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def import_progress(db: Path) -> tuple[str, int] | None:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("SELECT status, rows_done FROM point_imports").fetchone()
    except sqlite3.OperationalError:
        return None
    return (str(row[0]), int(row[1])) if row else None


def test_an_import_killed_with_sigkill_mid_way_and_run_again_awards_every_row_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "import.db"
    env = server_env(tmp_path, ACCRUE_DB=str(db))
    ids = enrol_members(db, tmp_path)
    csv_path = tmp_path / "awards.csv"
    expected, good_rows, bad_rows = write_file(csv_path, ids)

    first = run_import(csv_path, db, env)
    deadline = time.monotonic() + 120
    progress = None
    while time.monotonic() < deadline and first.poll() is None:
        progress = import_progress(db)
        if progress is not None and progress[1] > 0:
            break
        time.sleep(0.01)
    assert first.poll() is None, "the import finished before it could be killed; make the file bigger"
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL

    interrupted = import_progress(db)
    assert interrupted is not None
    status, rows_done = interrupted
    assert status == "running"
    assert 0 < rows_done < ROWS  # killed part-way: some chunks committed, not all

    second = run_import(csv_path, db, env)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["alreadyCompleted"] is False
    assert report["rows"] == ROWS
    assert import_progress(db) == ("completed", ROWS + 1)  # the last line number (the header is line 1)

    with sqlite3.connect(db) as conn:
        imported = dict(
            conn.execute(
                "SELECT member_id, SUM(amount) FROM transfers WHERE transfer_id LIKE 'import:%' GROUP BY member_id"
            ).fetchall()
        )
        postings, distinct = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT transfer_id) FROM transfers WHERE transfer_id LIKE 'import:%'"
        ).fetchone()
        balances = dict(conn.execute("SELECT user_id, balance FROM members").fetchall())
    assert postings == distinct == good_rows
    assert imported == dict(expected)
    assert balances == dict(expected)
    # The progress record is written in each chunk's transaction: the two runs' awards add up exactly.
    with sqlite3.connect(db) as conn:
        awarded_in_total = conn.execute("SELECT rows_awarded FROM point_imports").fetchone()[0]
    assert awarded_in_total == good_rows
    assert 0 < report["awarded"] < good_rows  # the second run only did what the first had not

    third = run_import(csv_path, db, env)
    out, err = third.communicate(timeout=120)
    assert third.returncode == 0, err
    again = json.loads(out.strip().splitlines()[-1])
    assert again["alreadyCompleted"] is True
    assert again["awarded"] == 0

    check = ledger_check(db, env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert bad_rows > 0
