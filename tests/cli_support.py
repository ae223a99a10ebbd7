"""`accrue` commands run as an operator runs them: a separate process on a database file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def accrue_cli(*args: str, env: Mapping[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "accrue.entrypoints.cli", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ledger_check(db: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`accrue ledger check`: every stored balance equals the sum of its postings."""
    return accrue_cli("ledger", "check", "--db", str(db), env=env)


def audit_verify(db: Path) -> subprocess.CompletedProcess[str]:
    """`accrue audit verify` with nothing of the test's own ACCRUE_ settings, the blobs beside the file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCRUE_")}
    env["ACCRUE_BLOB_DIR"] = str(db.parent / "blobs")
    return accrue_cli("audit", "verify", "--db", str(db), env=env)
