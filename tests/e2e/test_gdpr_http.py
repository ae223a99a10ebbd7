"""Issue 5, acceptance 5, against a real server process: export, erase, then grep the live database
file (and its WAL) for every personal value; `accrue ledger check` still passes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.cli_support import ledger_check
from tests.conftest import LiveServer, wait_for

pytestmark = pytest.mark.slow

EMAIL = "Quentin.Vasquez-Ybarra@example.com"
NAME = "Quentin Vasquez-Ybarra"
PHONE = "+1 (415) 555-0199"


def file_bytes(db: Path) -> bytes:
    wal = db.with_name(db.name + "-wal")
    return db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def forms(value: str) -> list[bytes]:
    return [value.encode(), value.lower().encode()]


def outbox_settled(db: Path) -> bool:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM outbox WHERE status = 'pending'").fetchone()[0]) == 0


def test_export_then_erase_leaves_no_personal_value_in_the_live_database_file(live_server: LiveServer) -> None:
    with live_server.client() as api:
        user = api.post("/users", json={"email": EMAIL, "name": NAME, "phone": PHONE})
        assert user.status_code == 201, user.text
        user_id = user.json()["data"]["userId"]
        for amount in ("12000.00", "45.50"):
            assert api.post("/orders", json={"userId": user_id, "amount": amount}).status_code == 201
        wait_for(lambda: outbox_settled(live_server.db))
        wait_for(
            lambda: len(api.get("/notifications", params={"userId": user_id}).json()["data"]["notifications"]) >= 2
        )

        with live_server.client("member", user_id) as own:
            exported = own.get(f"/users/{user_id}/export")
        assert exported.status_code == 200, exported.text
        document = exported.json()["data"]
        assert document["profile"]["email"] == EMAIL
        assert len(document["orders"]) == 2 and len(document["notifications"]) >= 2
        balance = document["profile"]["points"]
        assert sum(e["points"] for e in document["ledger"]) == balance

        erased = api.delete(f"/users/{user_id}")
        assert erased.status_code == 200, erased.text
        assert erased.json()["data"]["retained"] == []
        wait_for(lambda: outbox_settled(live_server.db))

        stored = file_bytes(live_server.db)
        for value in (EMAIL, NAME, PHONE):
            assert [f for f in forms(value) if f in stored] == [], f"{value!r} is still in the database file"
        assert api.get(f"/users/{user_id}").status_code == 404

    check = ledger_check(live_server.db, live_server.env)
    assert check.returncode == 0, check.stdout + check.stderr
    with sqlite3.connect(f"file:{live_server.db}?mode=ro", uri=True) as conn:
        kept = conn.execute("SELECT balance, erased, email, name, phone FROM members WHERE user_id = ?", (user_id,))
        assert kept.fetchone() == (balance, 1, None, None, None)
