"""Payment batch ingestion of a 1 000 000-row CSV: rows/s against a raw executemany, and peak memory.

    .venv/bin/python bench/ingest_bench.py                 # 1 000 000 rows
    .venv/bin/python bench/ingest_bench.py --rows 100000   # a quicker run

One CSV file (``payment_id,amount,currency``, ids in random order, 0.1 % bad rows) is written once.
Then two fresh subprocesses, each on its own new SQLite file with the full schema (same pragmas,
``synchronous=FULL``), load the same file:

- **raw**: ``csv.reader`` and ``executemany`` of the rows as text into the same ``payments`` table,
  as many rows per transaction as ingestion uses (``ACCRUE_PAYMENT_BATCH_CHUNK_ROWS``) - no
  validation, no queue, no audit: the least work any loader does;
- **ingest**: ``PaymentBatches.ingest_path``, the code behind ``accrue payments import``, the API
  upload and the inbox: hashing and storing the file, validating every row, duplicate checks,
  inserting payments, one queue message and one hash-chained audit entry per payment, progress.

Each reports its wall time and peak resident memory (``ru_maxrss``). Goals (issue 4): ingest
>= 20 000 rows/s, >= 0.5 x the raw rate, and peak memory under 200 MB.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RATE_GOAL = 20_000
RATIO_GOAL = 0.5
MEMORY_GOAL_MB = 200


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def write_csv(path: Path, rows: int) -> int:
    """Random-order ids, amounts in three currencies, one bad row in a thousand."""
    rng = random.Random(20260301)
    currencies = ("USD", "EUR", "GBP")
    bad = 0
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("payment_id,amount,currency\n")
        for n in range(rows):
            payment_id = f"pay_{rng.getrandbits(64):016x}{n:07d}"
            if n % 1000 == 999:
                fh.write(f"{payment_id},12.345,USD\n")  # more decimals than USD has
                bad += 1
            else:
                fh.write(f"{payment_id},{rng.randint(1, 99_999)}.{rng.randint(0, 99):02d},{currencies[n % 3]}\n")
    return bad


def chunk_rows() -> int:
    from accrue.config import Settings

    return Settings().payment_batch_chunk_rows


def run_raw(csv_path: Path, db_path: Path) -> dict[str, float]:
    from accrue.adapters.sqlite.database import Database

    rows_per_transaction = chunk_rows()
    database = Database(db_path)
    database.migrate()
    started = time.perf_counter()
    now = "2026-03-01T00:00:00.000000Z"
    with csv_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        next(reader)
        while True:
            chunk = [
                (r[0], r[1], r[2], "pending", now, now)
                for _, r in zip(range(rows_per_transaction), reader, strict=False)
            ]
            if not chunk:
                break
            with database.write() as conn:
                conn.executemany(
                    "INSERT INTO payments (payment_id, amount_minor, currency, status, created_at, updated_at) "
                    "VALUES (?,?,?,?,?,?)",
                    chunk,
                )
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    count = database.connection().execute("SELECT COUNT(*) FROM payments").fetchone()[0]
    database.close()
    return {"seconds": seconds, "rows": count, "peak_rss_mb": peak}


def run_ingest(csv_path: Path, work: Path) -> dict[str, float]:
    from accrue.bootstrap import bootstrap
    from accrue.config import Settings

    settings = Settings(
        env="test",
        db=work / "ingest.db",
        blob_dir=work / "blobs",
        inbox_dir=work / "inbox",
        workers_enabled=False,
        scheduler_enabled=False,
    )
    application = bootstrap(settings)
    parts = application.services["payments"]
    started = time.perf_counter()
    batch, _ = parts.batches.ingest_path(csv_path, source="cli")
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()  # before the counting queries below fill the page cache further
    counts = application.bus.query(
        lambda uow: (
            uow.connection.execute("SELECT COUNT(*) FROM payments").fetchone()[0],
            uow.connection.execute("SELECT COUNT(*) FROM queue_messages").fetchone()[0],
            uow.connection.execute("SELECT COUNT(*) FROM audit_log").fetchone()[0],
        )
    )
    application.close()
    return {
        "seconds": seconds,
        "rows": batch.total_rows,
        "accepted": batch.accepted_rows,
        "rejected": batch.rejected_rows,
        "payments": counts[0],
        "messages": counts[1],
        "audit_entries": counts[2],
        "peak_rss_mb": peak,
    }


def child(mode: str, csv_path: str, work: str) -> None:
    result = run_raw(Path(csv_path), Path(work) / "raw.db") if mode == "raw" else run_ingest(Path(csv_path), Path(work))
    print(json.dumps(result))


def measure(mode: str, csv_path: Path, work: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(csv_path), str(work)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--child", nargs=3, metavar=("MODE", "CSV", "WORK"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        work = Path(tmp)
        csv_path = work / "payments.csv"
        bad = write_csv(csv_path, args.rows)
        size_mb = csv_path.stat().st_size / 1e6
        raw = measure("raw", csv_path, work)
        ingest = measure("ingest", csv_path, work)
    raw_rate = raw["rows"] / raw["seconds"]
    ingest_rate = ingest["rows"] / ingest["seconds"]
    ratio = ingest_rate / raw_rate
    assert ingest["accepted"] == args.rows - bad and ingest["rejected"] == bad, ingest
    assert ingest["payments"] == ingest["accepted"], ingest
    print(f"rows: {args.rows:,} ({size_mb:.1f} MB CSV, {bad} bad rows), {chunk_rows():,} rows per transaction")
    print(f"raw executemany : {raw['seconds']:7.2f} s  {raw_rate:10,.0f} rows/s  peak {raw['peak_rss_mb']:.0f} MB")
    print(
        f"ingest (full)   : {ingest['seconds']:7.2f} s  {ingest_rate:10,.0f} rows/s  "
        f"peak {ingest['peak_rss_mb']:.0f} MB"
        f"  ({ingest['payments']:,} payments, {ingest['messages']:,} queue messages, "
        f"{ingest['audit_entries']:,} audit entries)"
    )
    print(f"ingest / raw    : {ratio:.2f} x")
    verdicts = {
        f">= {RATE_GOAL:,} rows/s": ingest_rate >= RATE_GOAL,
        f">= {RATIO_GOAL} x raw": ratio >= RATIO_GOAL,
        f"peak memory < {MEMORY_GOAL_MB} MB": ingest["peak_rss_mb"] < MEMORY_GOAL_MB,
    }
    for goal, met in verdicts.items():
        print(f"goal {goal}: {'met' if met else 'MISSED'}")


if __name__ == "__main__":
    main()
