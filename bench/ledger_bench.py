"""Ledger write throughput, three ways in one run on the same machine and the same kind of rows:

1. one transaction per posting: ``AwardPoints`` through the message bus, each its own unit of work
   (what an API request does);
2. the bulk path: ``accrue points import`` (``service_layer.imports.import_points`` on a CSV file,
   ``award_chunk`` transactions of 5 000 rows: domain rules, member updates, events to the outbox);
3. the baseline: a raw ``sqlite3`` ``executemany`` of the very transfer rows the bulk path wrote,
   into a fresh copy of the same schema, in one transaction, with the same pragmas.

Goal (issue 2): bulk >= 20 000 postings/s and >= 0.3 x raw.

    .venv/bin/python bench/ledger_bench.py [--rows 200000] [--single 2000] [--rounds 3] [--sync FULL]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

from accrue.adapters.sqlite.database import Database
from accrue.adapters.sqlite.repositories import TRANSFER_COLUMNS
from accrue.bootstrap import Application, bootstrap
from accrue.config import Settings
from accrue.domain import commands
from accrue.service_layer.handlers import enrol
from accrue.service_layer.imports import import_points

MEMBERS = 1000


def application(folder: Path, sync: str) -> Application:
    folder.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        env="test",
        db=folder / "bench.db",
        blob_dir=folder / "blobs",
        inbox_dir=folder / "inbox",
        jwt_secret="bench-secret-0123456789abcdef0123456789",
        sqlite_synchronous=sync,  # type: ignore[arg-type]
        workers_enabled=False,
        scheduler_enabled=False,
    )
    return bootstrap(settings)


def member_ids() -> list[str]:
    return [f"bench-{n:05d}" for n in range(MEMBERS)]


def enrol_members(app: Application) -> None:
    with app.bus.uow_factory() as uow:
        for user_id in member_ids():
            enrol(
                uow,
                user_id=user_id,
                email=f"{user_id}@example.com",
                name=user_id,
                phone=None,
                now=app.clock(),
                welcome_bonus_points=0,
            )
        uow.commit()


def points_for_row(n: int) -> int:
    return 1 + n % 50


def one_transaction_per_posting(app: Application, count: int) -> float:
    ids = member_ids()
    start = time.perf_counter()
    for n in range(count):
        app.bus.handle(
            commands.AwardPoints(
                user_id=ids[n % MEMBERS], points=points_for_row(n), reason="bench", transfer_id=f"single:{n}"
            )
        )
    return count / (time.perf_counter() - start)


def bulk_import(app: Application, folder: Path, rows: int, round_number: int) -> tuple[float, float]:
    """(postings/s of the import, events/s of the outbox drain that follows it, notification sends
    included)."""
    ids = member_ids()
    path = folder / f"awards-{round_number}.csv"
    with path.open("w", encoding="utf-8") as fh:
        fh.write("userId,points,reason\n")
        fh.writelines(f"{ids[n % MEMBERS]},{points_for_row(n)},bench round {round_number}\n" for n in range(rows))
    start = time.perf_counter()
    report = import_points(app.bus.uow_factory, path, app.clock)
    imported = time.perf_counter()
    assert report.awarded == rows, report
    pending = app.bus.query(lambda uow: uow.outbox.pending_count())
    app.worker.drain()
    # With every channel local the outbox handlers send the notifications they store; queued ones
    # (a channel on the network) are sent by the dispatcher: drained too, so both count the sends.
    app.services["notification_dispatcher"].drain()
    drained = time.perf_counter()
    return rows / (imported - start), pending / (drained - imported)


def written_transfers(app: Application) -> list[tuple[object, ...]]:
    """The transfer rows the bulk import wrote, exactly as stored."""
    rows: list[tuple[object, ...]] = app.bus.query(
        lambda uow: [
            tuple(r)
            for r in uow.connection.execute(
                f"SELECT {TRANSFER_COLUMNS} FROM transfers WHERE transfer_id LIKE 'import:%' ORDER BY seq"
            )
        ]
    )
    return rows


def raw_executemany(path: Path, rows: list[tuple[object, ...]], sync: str) -> float:
    """The same rows inserted by sqlite3 alone, in one transaction, into a fresh copy of the schema."""
    db = Database(path, synchronous=sync)
    db.migrate()
    conn = db.connection()
    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(f"INSERT INTO transfers ({TRANSFER_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return len(rows) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="postings for the bulk and raw runs")
    parser.add_argument("--single", type=int, default=2_000, help="postings for the one-per-transaction run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bulk and raw rounds; best of each")
    parser.add_argument("--sync", default="FULL", choices=["FULL", "NORMAL"], help="PRAGMA synchronous")
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go (default: a temp dir)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="ledger-bench-", dir=args.dir))
    bulk_runs: list[float] = []
    drain_runs: list[float] = []
    raw_runs: list[float] = []
    problems: list[str] = []
    try:
        app = application(folder / "single", args.sync)
        enrol_members(app)
        single = one_transaction_per_posting(app, args.single)
        app.close()
        # Each round starts from an empty database for both contenders; rounds alternate so that
        # both see the same machine load, and the best round of each is compared.
        for round_number in range(args.rounds):
            app = application(folder / f"bulk-{round_number}", args.sync)
            enrol_members(app)
            bulk, drain = bulk_import(app, folder, args.rows, round_number)
            problems += app.bus.query(lambda uow: uow.ledger.check())
            rows = written_transfers(app)
            app.close()
            assert len(rows) == args.rows
            raw_runs.append(raw_executemany(folder / f"raw-{round_number}.db", rows, args.sync))
            bulk_runs.append(bulk)
            drain_runs.append(drain)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    bulk, drain, raw = max(bulk_runs), max(drain_runs), max(raw_runs)

    assert problems == [], problems
    results = {
        "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}",
        "sync": args.sync,
        "rows": args.rows,
        "single_postings_per_s": round(single),
        "bulk_postings_per_s": round(bulk),
        "outbox_events_per_s": round(drain),
        "raw_rows_per_s": round(raw),
        "bulk_over_single": round(bulk / single, 1),
        "bulk_over_raw": round(bulk / raw, 3),
        "bulk_rounds": [round(x) for x in bulk_runs],
        "raw_rounds": [round(x) for x in raw_runs],
    }
    print(f"synchronous={args.sync}, {args.rows} rows, {MEMBERS} members, best of {args.rounds} rounds")
    print(f"  one transaction per posting  {single:>10,.0f} postings/s  ({args.single} postings)")
    print(f"  bulk import (award_chunk)    {bulk:>10,.0f} postings/s  = {bulk / single:,.1f} x single")
    print(f"  raw sqlite3 executemany      {raw:>10,.0f} rows/s      bulk = {bulk / raw:.2f} x raw")
    print(f"  outbox drain after import    {drain:>10,.0f} events/s (notification sends included)")
    goal = bulk >= 20_000 and bulk >= 0.3 * raw
    print(f"  goal bulk >= 20 000/s and >= 0.3 x raw: {'met' if goal else 'MISSED'}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
