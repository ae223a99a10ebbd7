"""GDPR on a real SQLite file: the export holds everything; after erasure no personal value of the
member is left in the database file's bytes (nor its WAL), nor in the archived webhook payloads,
and the ledger still checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from accrue.adapters.sqlite.gdpr import EXPORTED_THROUGH_PORTS, HOLDINGS, MEMBER_COLUMNS, NOT_SWEPT
from accrue.bootstrap import Application, bootstrap
from accrue.config import Settings
from accrue.entrypoints.api.app import create_app
from tests.cli_support import ledger_check
from tests.conftest import auth, make_settings

ADMIN = auth()
SHOPIFY_SECRET = "shpss_gdpr_suite_secret_0123456789abcdef"
EMAIL = "Zelda.Quuxley+loyal@Example.org"
NAME = "Zelda Quuxley-Øvergård"
PHONE = "+44 20 7946 0958"
OTHER_NAME = "Bob Keeperton"


@pytest.fixture
def gdpr_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, shopify_webhook_secrets=[SHOPIFY_SECRET], workers_enabled=False)


@pytest.fixture
def gdpr_app(gdpr_settings: Settings) -> Iterator[Application]:
    application = bootstrap(gdpr_settings)
    yield application
    application.close()


@pytest.fixture
def client(gdpr_app: Application) -> Iterator[TestClient]:
    with TestClient(create_app(gdpr_app)) as test_client:
        yield test_client


def spellings(value: str) -> set[bytes]:
    """Every way the value could sit in the file: as typed, lower case, JSON-escaped."""
    forms = {value, value.lower(), value.upper()}
    forms |= {json.dumps(f)[1:-1] for f in list(forms)}
    return {f.encode("utf-8") for f in forms}


def stored_bytes(db: Path) -> bytes:
    data = db.read_bytes()
    for suffix in ("-wal", "-journal"):
        extra = db.with_name(db.name + suffix)
        if extra.exists():
            data += extra.read_bytes()
    return data


def found_in(data: bytes, value: str) -> list[bytes]:
    return [form for form in spellings(value) if form in data]


def shopify_delivery(client: TestClient, email: str) -> None:
    body = json.dumps(
        {
            "id": 4242,
            "email": email,
            "total_price": "80.00",
            "currency": "USD",
            "customer": {"first_name": "Zelda", "phone": PHONE},
            "line_items": [{"sku": "MUG", "quantity": 1, "price": "80.00", "product_type": "kitchen"}],
        }
    ).encode()
    digest = base64.b64encode(hmac.new(SHOPIFY_SECRET.encode(), body, hashlib.sha256).digest()).decode()
    headers = {
        "X-Shopify-Hmac-Sha256": digest,
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Webhook-Id": "gdpr-delivery-1",
        "Content-Type": "application/json",
    }
    response = client.post("/webhooks/shopify", content=body, headers=headers)
    assert response.status_code == 200, response.text


def a_member_with_history(client: TestClient, app: Application) -> str:
    bob = client.post("/users", json={"email": "bob.keeperton@example.net", "name": OTHER_NAME}, headers=ADMIN)
    assert bob.status_code == 201
    created = client.post(
        "/users",
        json={"email": EMAIL, "name": NAME, "phone": PHONE},
        headers={**ADMIN, "Idempotency-Key": "enrol-zelda"},  # the stored response names her
    )
    assert created.status_code == 201, created.text
    user = created.json()["data"]
    user_id: str = user["userId"]
    friend = client.post(
        "/signup",
        json={"userId": "friend-of-zelda", "referralCode": user["referralCode"], "email": "friend@example.net"},
        headers=ADMIN,
    )
    assert friend.status_code == 201, friend.text
    assert client.post("/orders", json={"userId": user_id, "amount": "12000.00"}, headers=ADMIN).status_code == 201
    prefs = client.put(f"/users/{user_id}/preferences", json={"email": True, "sms": False, "push": True}, headers=ADMIN)
    assert prefs.status_code == 200, prefs.text
    shopify_delivery(client, EMAIL.upper())
    app.worker.drain()
    app.services["notification_dispatcher"].drain()  # emails to the local outbox, addressed to her
    return user_id


def test_the_export_is_one_document_with_every_section_and_only_the_members_data(
    client: TestClient, gdpr_app: Application
) -> None:
    user_id = a_member_with_history(client, gdpr_app)
    own = client.get(f"/users/{user_id}/export", headers=auth("member", user_id))
    assert own.status_code == 200, own.text
    document = own.json()["data"]
    assert document["format"] == "accrue.member-export/1"
    assert document["profile"] | {"email": EMAIL, "name": NAME, "phone": PHONE} == document["profile"]
    assert document["preferences"] == [document["preferences"][0]]
    assert document["preferences"][0]["sms"] == 0
    assert {o["amount"] for o in document["orders"]} == {"12000.00", "80.00"}
    assert {e["reason"] for e in document["ledger"]} >= {"welcome_bonus", "earn"}
    assert sum(e["points"] for e in document["ledger"]) == document["profile"]["points"]
    assert [r["referredId"] for r in document["referrals"]] == ["friend-of-zelda"]
    assert {n["type"] for n in document["notifications"]} == {"tier_upgrade", "milestone", "referral_signup"}
    assert document["payments"] == []
    assert {m["recipient"] for m in document["channelMessages"] if m["channel"] == "email"} == {EMAIL}
    assert [e["provider"] for e in document["webhookEvents"]] == ["shopify"]
    assert OTHER_NAME not in json.dumps(document, ensure_ascii=False)
    assert client.get(f"/users/{user_id}/export", headers=ADMIN).json()["data"]["userId"] == user_id
    assert client.get(f"/users/{user_id}/export", headers=auth("member", "someone-else")).status_code == 404
    assert client.get(f"/users/{user_id}/export", headers=auth("service", "pos")).status_code == 403
    assert client.get("/users/nobody/export", headers=ADMIN).status_code == 404


def test_after_erasure_no_personal_value_is_left_in_the_database_file_or_the_archive(
    client: TestClient, gdpr_app: Application, gdpr_settings: Settings
) -> None:
    user_id = a_member_with_history(client, gdpr_app)
    balance = client.get(f"/points/{user_id}", headers=ADMIN).json()["data"]["balance"]
    db = Path(gdpr_settings.db)
    archive = Path(gdpr_settings.blob_dir)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = stored_bytes(db)
    for value in (EMAIL, NAME, PHONE):
        assert found_in(before, value), f"the test would prove nothing: {value!r} was never stored"
    assert any(EMAIL.upper().encode() in p.read_bytes() for p in archive.rglob("*") if p.is_file())

    response = client.delete(f"/users/{user_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    report = response.json()["data"]
    assert (report["erased"], report["alreadyErased"], report["retained"], report["storagePurged"]) == (
        True,
        False,
        [],
        True,
    )
    assert report["blobsDeleted"] == 1
    assert report["records"]["members"] == 1

    after = stored_bytes(db)
    for value in (EMAIL, NAME, PHONE):
        assert found_in(after, value) == [], f"{value!r} is still in the database file"
    assert OTHER_NAME.encode() in after  # other members are untouched
    for path in archive.rglob("*"):
        if path.is_file():
            for value in (EMAIL, PHONE):
                assert found_in(path.read_bytes(), value) == [], f"{value!r} is still in {path}"

    # The ledger is balanced and anonymous; the points are still there.
    assert gdpr_app.bus.query(lambda uow: uow.ledger.check()) == []
    check = ledger_check(db, {"ACCRUE_ENV": "test", "ACCRUE_BLOB_DIR": str(archive), "PATH": "/usr/bin:/bin"})
    assert check.returncode == 0, check.stdout + check.stderr
    member = gdpr_app.bus.query(lambda uow: uow.members.get(user_id))
    assert (member.erased, member.email, member.name, member.phone, member.balance) == (True, None, None, None, balance)

    # Not found by email (nor by id through the API); the address is free again.
    assert gdpr_app.bus.query(lambda uow: uow.members.get_by_email(EMAIL)) is None
    assert client.get(f"/users/{user_id}", headers=ADMIN).status_code == 404
    assert client.get(f"/users/{user_id}/export", headers=ADMIN).status_code == 404
    again = client.post("/users", json={"email": EMAIL, "name": "Someone New"}, headers=ADMIN)
    assert again.status_code == 201 and again.json()["data"]["userId"] != user_id

    # A retried request replays the stored, now erased, response; erasing twice changes nothing.
    replay = client.post(
        "/users",
        json={"email": EMAIL, "name": NAME, "phone": PHONE},
        headers={**ADMIN, "Idempotency-Key": "enrol-zelda"},
    )
    assert EMAIL not in replay.text
    second = client.delete(f"/users/{user_id}", headers=ADMIN).json()["data"]
    assert (second["alreadyErased"], second["records"]) == (True, {})


def test_only_an_admin_erases_and_an_unknown_member_is_404(client: TestClient) -> None:
    user_id = client.post("/users", json={"email": "a@example.com", "name": "A"}, headers=ADMIN).json()["data"][
        "userId"
    ]
    assert client.delete(f"/users/{user_id}", headers=auth("member", user_id)).status_code == 403
    assert client.delete(f"/users/{user_id}", headers=auth("service", "pos")).status_code == 403
    assert client.delete("/users/nobody", headers=ADMIN).status_code == 404


def test_every_table_that_names_a_member_is_exported_and_swept(gdpr_app: Application) -> None:
    """A new feature's table with a member column must be added to the export (HOLDINGS) or be
    exported elsewhere, so no member data is silently left out."""
    assert gdpr_app.database is not None
    conn = gdpr_app.database.connection()
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    naming = {t for t in tables if {r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')} & MEMBER_COLUMNS}
    exported = {h.table for h in HOLDINGS} | EXPORTED_THROUGH_PORTS
    assert naming - exported == set()
    assert NOT_SWEPT & {h.table for h in HOLDINGS} == set()
