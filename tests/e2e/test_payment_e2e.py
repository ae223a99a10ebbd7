"""Payments end to end over HTTP against a real `accrue serve` process: a 1 000-row file with every kind
of bad row and duplicate ids, the sandbox gateway's outcomes, a re-upload, and the audit log of the
run verified (then tampered with) by the real `accrue audit verify`."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli_support import audit_verify
from tests.conftest import LiveServer, start_server, stop_server, wait_for

pytestmark = pytest.mark.slow

# Each kind of fault once (10 rows); the reason each must be reported with.
BAD_ROWS: dict[int, tuple[str, str]] = {
    101: (",10.00,USD", "payment_id: is required"),
    202: ("bad id!,10.00,USD", "payment_id: must be 1 to 128 letters, digits or _ . : -"),
    303: ("e2e_no_amount,,USD", "amount: is required"),
    404: ("e2e_text,ten,USD", "amount: must be a decimal number"),
    505: ("e2e_zero,0.00,USD", "amount: must be greater than 0"),
    606: ("e2e_negative,-3.00,USD", "amount: must be greater than 0"),
    707: ("e2e_decimals,1.234,USD", "amount: has more than 2 decimal places allowed for USD"),
    808: ("e2e_currency,5.00,ABC", "currency: 'ABC' is not an ISO 4217 currency code"),
    909: ("e2e_columns,5.00", "expected 3 columns, got 2"),
    950: ("e2e_nan,NaN,USD", "amount: must be a finite decimal number"),
}
# Five duplicate ids: four repeat an earlier line of the file, one a payment made through the API.
DUPLICATES: dict[int, tuple[str, str]] = {
    150: ("e2e_0010", "payment_id: e2e_0010 duplicates line 12"),
    460: ("e2e_0400", "payment_id: e2e_0400 duplicates line 402"),
    777: ("e2e_0700", "payment_id: e2e_0700 duplicates line 702"),
    990: ("e2e_0002", "payment_id: e2e_0002 duplicates line 4"),
    999: ("api_first", "payment_id: api_first already exists"),
}


def amount_for(n: int) -> str:
    """Every 40th row declines (.51), every 40th+20 is flaky (.52), the rest succeed."""
    cents = 51 if n % 40 == 0 else 52 if n % 40 == 20 else n % 50
    return f"{1 + n % 300}.{cents:02d}"


def build_file() -> tuple[str, dict[str, str]]:
    """1 000 data rows (lines 2..1001); returns the file and the amount of each accepted id."""
    lines = ["payment_id,amount,currency"]
    accepted: dict[str, str] = {}
    for line in range(2, 1002):
        n = line - 2
        if line in BAD_ROWS:
            lines.append(BAD_ROWS[line][0])
        elif line in DUPLICATES:
            lines.append(f"{DUPLICATES[line][0]},{amount_for(n)},USD")
        else:
            payment_id = f"e2e_{n:04d}"
            lines.append(f"{payment_id},{amount_for(n)},USD")
            accepted[payment_id] = amount_for(n)
    return "\n".join(lines) + "\n", accepted


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    running = start_server(
        tmp_path,
        ACCRUE_PAYMENT_RETRY_INTERVAL_SECONDS="0.02",
        ACCRUE_PAYMENT_POLL_SECONDS="0.05",
        ACCRUE_PAYMENT_QUEUE_VISIBILITY_SECONDS="30",
        ACCRUE_INBOX_POLL_SECONDS="0.2",
    )
    yield running
    stop_server(running)


def data(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    return response.json()["data"]


def test_a_thousand_row_file_is_judged_row_by_row_and_every_payment_settles(server: LiveServer) -> None:
    body, accepted = build_file()
    with server.client() as client:
        data(client.post("/payments", json={"paymentId": "api_first", "amount": "5.00"}), 201)
        upload = client.post("/payments/batches", content=body, headers={"Content-Type": "text/csv"})
        batch = data(upload, 202)
        assert batch["status"] == "processing" and batch["created"] is True
        url = f"/payments/batches/{batch['batchId']}"
        wait_for(lambda: data(client.get(url), 200)["status"] == "completed", timeout=60)
        report = data(client.get(url, params={"limit": 100}), 200)
        assert (report["totalRows"], report["acceptedRows"], report["rejectedRows"], report["duplicateRows"]) == (
            1000,
            985,
            10,
            5,
        )
        expected = sorted(
            [(line, "invalid", reason) for line, (_, reason) in BAD_ROWS.items()]
            + [(line, "duplicate", reason) for line, (_, reason) in DUPLICATES.items()]
        )
        assert [(e["line"], e["kind"], e["reason"]) for e in report["errors"]] == expected

        # Every accepted payment ends processed or failed, within seconds.
        def settled() -> bool:
            for status in ("pending", "processing"):
                if data(client.get("/payments", params={"status": status, "limit": 1}), 200)["payments"]:
                    return False
            return True

        wait_for(settled, timeout=90, interval=0.5)
        failed: dict[str, Any] = {}
        cursor = None
        while True:
            params = {"status": "failed", "limit": 100, **({"cursor": cursor} if cursor else {})}
            page = data(client.get("/payments", params=params), 200)
            failed.update({p["paymentId"]: p for p in page["payments"]})
            cursor = page["nextCursor"]
            if cursor is None:
                break
        declined = {pid for pid, amount in accepted.items() if amount.endswith(".51")}
        flaky = {pid for pid, amount in accepted.items() if amount.endswith(".52")}
        assert len(declined) >= 20 and len(flaky) >= 20
        assert set(failed) == declined
        assert {p["failureReason"] for p in failed.values()} == {"card_declined"}
        for payment_id in sorted(flaky):
            payment = data(client.get(f"/payments/{payment_id}"), 200)
            assert (payment["status"], payment["attempts"]) == ("processed", 3), payment
        plain = next(pid for pid in sorted(accepted) if pid not in declined | flaky)
        assert (data(client.get(f"/payments/{plain}"), 200)["status"]) == "processed"

        # The same file again: the same batch, nothing new.
        db = sqlite3.connect(f"file:{server.db}?mode=ro", uri=True)
        before = db.execute("SELECT (SELECT COUNT(*) FROM payments), (SELECT COUNT(*) FROM audit_log)").fetchone()
        again = data(client.post("/payments/batches", content=body, headers={"Content-Type": "text/csv"}), 200)
        assert again == {"batchId": batch["batchId"], "status": "completed", "created": False}
        after = db.execute("SELECT (SELECT COUNT(*) FROM payments), (SELECT COUNT(*) FROM audit_log)").fetchone()
        assert after == before and after[0] == 986  # 985 from the file + the API one
        db.close()

    # The audit log of this real run verifies; a changed entry is found.
    stop_server(server)
    passed = audit_verify(server.db)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    conn = sqlite3.connect(server.db)
    target = conn.execute(
        "SELECT seq FROM audit_log WHERE subject_id = ? AND action = 'payment.failed'", (sorted(declined)[0],)
    ).fetchone()[0]
    conn.execute("DROP TRIGGER audit_log_is_append_only")
    conn.execute(
        "UPDATE audit_log SET details = replace(details, 'card_declined', 'card_approved') WHERE seq = ?", (target,)
    )
    conn.commit()
    conn.close()
    broken = audit_verify(server.db)
    assert broken.returncode == 1
    assert f"audit log BROKEN at entry {target}" in broken.stdout


def test_a_file_dropped_in_the_inbox_is_ingested_and_moved_to_done(server: LiveServer) -> None:
    inbox = Path(server.env["ACCRUE_INBOX_DIR"])
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "drop.csv.part").write_text("payment_id,amount,currency\ninbox_1,3.00,EUR\ninbox_2,4.00,EUR\n")
    os.replace(inbox / "drop.csv.part", inbox / "drop.csv")  # appears whole, like an S3 object
    wait_for(lambda: (inbox / "done" / "drop.csv").exists(), timeout=30)
    with server.client() as client:
        wait_for(lambda: data(client.get("/payments/inbox_2"), 200)["status"] == "processed", timeout=30)
        assert data(client.get("/payments/inbox_1"), 200)["amount"] == "3.00"
