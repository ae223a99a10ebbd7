"""SIGKILL the server in the middle of a batch import, start it again: the import resumes where its last
transaction ended and completes; every row is accepted once or rejected, none lost, none doubled,
and every accepted payment has exactly one place in the queue."""

from __future__ import annotations

import signal
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import auth, start_server, stop_server, wait_for

pytestmark = pytest.mark.slow

ROWS = 150_000
BAD_EVERY = 997  # a bad amount
DUPLICATE_EVERY = 1009  # repeats the id of the row before


def build(path: Path) -> tuple[set[str], set[int], set[int]]:
    accepted: set[str] = set()
    bad: set[int] = set()
    duplicates: set[int] = set()
    with path.open("w") as fh:
        fh.write("payment_id,amount,currency\n")
        for n in range(ROWS):
            line = n + 2
            if n % BAD_EVERY == BAD_EVERY - 1:
                fh.write(f"crash_{n:06d},12.345,USD\n")
                bad.add(line)
            elif n % DUPLICATE_EVERY == DUPLICATE_EVERY - 1 and f"crash_{n - 1:06d}" in accepted:
                fh.write(f"crash_{n - 1:06d},1.00,USD\n")
                duplicates.add(line)
            else:
                fh.write(f"crash_{n:06d},{1 + n % 500}.{n % 100:02d},EUR\n")
                accepted.add(f"crash_{n:06d}")
    return accepted, bad, duplicates


def batch(url: str, batch_id: str) -> Any:
    response = httpx.get(f"{url}/payments/batches/{batch_id}", headers=auth(), params={"limit": 100}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_a_batch_import_killed_mid_file_completes_after_restart_with_no_row_lost_or_doubled(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    accepted, bad, duplicates = build(path)
    env = {
        # Small transactions so the kill lands between many of them; no consumers, so the queue
        # can be checked message by message afterwards.
        "ACCRUE_PAYMENT_BATCH_CHUNK_ROWS": "1000",
        "ACCRUE_PAYMENT_WORKERS": "0",
    }
    server = start_server(tmp_path, **env)
    try:
        with path.open("rb") as fh:
            response = httpx.post(
                f"{server.url}/payments/batches",
                content=fh,
                headers={**auth(), "Content-Type": "text/csv"},
                timeout=60,
            )
        assert response.status_code == 202, response.text
        batch_id = response.json()["data"]["batchId"]
        wait_for(lambda: batch(server.url, batch_id)["totalRows"] >= 20_000, timeout=60, interval=0.05)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
    finally:
        stop_server(server)

    conn = sqlite3.connect(server.db)
    interrupted = conn.execute(
        "SELECT status, total_rows FROM payment_batches WHERE batch_id = ?", (batch_id,)
    ).fetchone()
    conn.close()
    assert interrupted[0] == "processing" and 0 < interrupted[1] < ROWS, interrupted

    restarted = start_server(tmp_path, **env)
    try:
        wait_for(lambda: batch(restarted.url, batch_id)["status"] == "completed", timeout=120, interval=0.2)
        report = batch(restarted.url, batch_id)
    finally:
        stop_server(restarted)
    assert (report["totalRows"], report["acceptedRows"], report["rejectedRows"], report["duplicateRows"]) == (
        ROWS,
        len(accepted),
        len(bad),
        len(duplicates),
    )

    conn = sqlite3.connect(server.db)
    stored = [r[0] for r in conn.execute("SELECT payment_id FROM payments")]
    assert len(stored) == len(set(stored)) == len(accepted)
    assert set(stored) == accepted
    issues = dict(conn.execute("SELECT line, kind FROM payment_batch_issues WHERE batch_id = ?", (batch_id,)))
    assert {line for line, kind in issues.items() if kind == "invalid"} == bad
    assert {line for line, kind in issues.items() if kind == "duplicate"} == duplicates
    queued = Counter(
        r[0] for r in conn.execute("SELECT j.value FROM queue_messages q, json_each(q.body, '$.paymentIds') j")
    )
    assert set(queued) == accepted and max(queued.values()) == 1
    conn.close()
