"""The operator's command line on a real database file: dead letters, ledger check, tokens, and the
production-secret refusal."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from accrue.bootstrap import bootstrap
from accrue.domain import commands
from accrue.entrypoints.api.security import Role, decode_token
from accrue.entrypoints.cli import cli
from tests.conftest import SECRET, make_settings, server_env


class BrokenRenderer:
    def render(self, template: str, context: Mapping[str, Any]) -> str:
        raise ConnectionError("template service unavailable")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return server_env(tmp_path)


def run(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def dead_letter_database(tmp_path: Path, db: Path) -> None:
    """A member upgraded to SILVER whose notifications failed five times (the renderer was down)."""
    app = bootstrap(make_settings(tmp_path, db=db), renderer=BrokenRenderer())
    try:
        app.bus.handle(
            commands.RecordTransaction(member_id="m-1", amount=Decimal("12000"), transaction_type="purchase")
        )
        app.worker.drain()
    finally:
        app.close()


def outbox_rows(db: Path) -> dict[str, tuple[int, str, int]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT handler, message_id, status, attempts FROM outbox "
            "WHERE handler IN ('notify_tier_upgraded', 'notify_milestones_reached')"
        ).fetchall()
    return {handler: (message_id, status, attempts) for handler, message_id, status, attempts in rows}


def test_dead_letters_are_listed_and_a_redrive_delivers_them(tmp_path: Path, env: dict[str, str]) -> None:
    db = Path(env["ACCRUE_DB"])
    dead_letter_database(tmp_path, db)
    rows = outbox_rows(db)
    assert {status for _, status, _ in rows.values()} == {"dead"}
    assert {attempts for _, _, attempts in rows.values()} == {5}

    listed = run(env, "dead-letters", "list", "--db", str(db))
    assert listed.exit_code == 0, listed.output
    tier_id = f"outbox:{rows['notify_tier_upgraded'][0]}"
    assert tier_id in listed.output
    assert "TierUpgraded" in listed.output
    assert "ConnectionError" in listed.output

    redriven = run(env, "dead-letters", "redrive", tier_id, "--db", str(db))
    assert redriven.exit_code == 0, redriven.output
    assert f"redriven {tier_id}" in redriven.output
    after = outbox_rows(db)
    assert after["notify_tier_upgraded"][1] == "done"
    assert after["notify_milestones_reached"][1] == "dead"  # only the one asked for
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT type FROM notifications").fetchall() == [("tier_upgrade",)]

    again = run(env, "dead-letters", "redrive", tier_id, "--db", str(db))
    assert again.exit_code == 1
    listed_after = run(env, "dead-letters", "list", "--db", str(db))
    assert tier_id not in listed_after.output


def test_the_ledger_check_exits_zero_on_a_sound_ledger_and_one_naming_a_drifted_balance(
    tmp_path: Path, env: dict[str, str]
) -> None:
    db = Path(env["ACCRUE_DB"])
    app = bootstrap(make_settings(tmp_path, db=db))
    try:
        app.bus.handle(commands.RecordTransaction(member_id="m-1", amount=Decimal("99.99"), transaction_type="bonus"))
    finally:
        app.close()
    ok = run(env, "ledger", "check", "--db", str(db))
    assert ok.exit_code == 0
    assert "ledger OK" in ok.output

    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE members SET balance = 0")
    broken = run(env, "ledger", "check", "--db", str(db))
    assert broken.exit_code == 1
    assert "member m-1" in broken.output


def test_token_prints_a_token_signed_with_the_configured_secret(env: dict[str, str]) -> None:
    result = run(env, "token", "--role", "member", "--sub", "usr_1")
    assert result.exit_code == 0
    principal = decode_token(SECRET, result.output.strip())
    assert (principal.sub, principal.role) == ("usr_1", Role.MEMBER)
    assert run(env, "token", "--role", "root", "--sub", "x").exit_code == 2


def test_serve_refuses_to_start_in_production_with_the_development_secret(env: dict[str, str]) -> None:
    production: dict[str, str | None] = {**env, "ACCRUE_ENV": "production", "ACCRUE_JWT_SECRET": None}
    result = CliRunner().invoke(cli, ["serve", "--port", "0"], env=production)
    assert result.exit_code == 2
    assert "ACCRUE_JWT_SECRET: the built-in development secret is refused" in result.output
    short = CliRunner().invoke(cli, ["serve", "--port", "0"], env={**production, "ACCRUE_JWT_SECRET": "short"})
    assert short.exit_code == 2
    assert "at least 32 characters" in short.output
