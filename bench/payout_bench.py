"""Monthly payout run over 10 000, 100 000 and 1 000 000 pending rewards: rewards/s and peak memory.

    .venv/bin/python bench/payout_bench.py                      # all three sizes
    .venv/bin/python bench/payout_bench.py --sizes 10000 100000  # a subset

For each size the pending rewards are generated straight into a fresh SQLite file (executemany), then
a *fresh* subprocess bootstraps the application and runs ``run_payout`` (the same code as
``accrue payouts run`` and the scheduled Lambda). That process reports:

- its resident memory after start-up (baseline) and its peak resident memory (``ru_maxrss``);
- the run's wall time and rewards/s;
- a baseline measured on the same file right after: one read-only ``GROUP BY referrer`` scan, the
  least work any payout needs; the run's time is also given as a multiple of it.

Goals (SPEC, issue 3): >= 50 000 rewards/s at every size, and peak memory at 1 000 000 within
1.5 x the peak at 100 000 (memory stays flat: the run streams).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

MONTH = "2026-03"
REWARDS_PER_REFERRER = 50
RATE_GOAL = 50_000
MEMORY_RATIO_GOAL = 1.5


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def generate(db_path: Path, rewards: int) -> None:
    """Members (referrers and referred) and pending rewards in March, inserted in bulk."""
    from accrue.adapters.sqlite.database import Database

    database = Database(db_path, synchronous="NORMAL")
    database.migrate()
    database.close()
    referrers = max(rewards // REWARDS_PER_REFERRER, 1)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    step = (timedelta(days=30) / rewards).total_seconds()
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    created = "2026-02-01T00:00:00.000000Z"
    conn.executemany(
        "INSERT INTO members (user_id, created_at) VALUES (?, ?)",
        ((f"usr_ref_{r:07d}", created) for r in range(referrers)),
    )
    conn.executemany(
        "INSERT INTO members (user_id, created_at) VALUES (?, ?)",
        ((f"usr_new_{n:08d}", created) for n in range(rewards)),
    )

    def rows():  # type: ignore[no-untyped-def]
        for n in range(rewards):
            referrer = n % referrers
            number = n // referrers + 1
            cents = 2500 if number >= 25 else 2000 if number >= 10 else 1500 if number >= 5 else 1000
            at = (start + timedelta(seconds=n * step)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            yield (f"ref_{n:09d}", f"usr_ref_{referrer:07d}", f"usr_new_{n:08d}", "BENCH222", number, cents, at)

    conn.executemany(
        "INSERT INTO referrals (referral_id, referrer_id, referred_id, referral_code, referral_number, reward_cents, "
        "status, created_at) VALUES (?,?,?,?,?,?,'pending',?)",
        rows(),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def child(db_path: Path, blob_dir: Path, chunk_size: int) -> None:
    """Runs in a fresh process: bootstrap, measure the baseline scan, run the payout, report."""
    from accrue.bootstrap import bootstrap
    from accrue.config import Settings
    from accrue.service_layer.payouts import run_payout

    application = bootstrap(
        Settings(env="test", db=db_path, blob_dir=blob_dir, workers_enabled=False, scheduler_enabled=False)
    )
    assert application.database is not None and application.blobs is not None
    started_mib = rss_mib()

    clock = lambda: datetime(2026, 4, 1, 2, 0, tzinfo=UTC)  # noqa: E731 - the scheduled instant
    run_started = time.perf_counter()
    run = run_payout(application.bus.uow_factory, application.blobs, clock, MONTH, chunk_size=chunk_size)
    run_seconds = time.perf_counter() - run_started
    peak_mib = peak_rss_mib()  # before the baseline scan below, which has its own memory needs

    conn = application.database.connection()
    scan_started = time.perf_counter()
    groups = conn.execute(
        "SELECT COUNT(*) FROM (SELECT referrer_id, SUM(reward_cents) FROM referrals GROUP BY referrer_id)"
    ).fetchone()[0]
    scan_seconds = time.perf_counter() - scan_started
    paid = conn.execute("SELECT COUNT(*) FROM referrals WHERE status = 'paid'").fetchone()[0]
    report_bytes = sum(len(chunk) for chunk in application.blobs.iter_chunks(run.report_key or ""))
    print(
        json.dumps(
            {
                "rewards": run.rewards,
                "paid": paid,
                "referrers": run.referrers,
                "groups": groups,
                "status": str(run.status),
                "run_seconds": run_seconds,
                "scan_seconds": scan_seconds,
                "started_mib": started_mib,
                "peak_mib": peak_mib,
                "report_bytes": report_bytes,
            }
        )
    )
    application.close()


def measure(size: int, workdir: Path, chunk_size: int) -> dict[str, float]:
    folder = workdir / f"n{size}"
    folder.mkdir()
    db_path = folder / "bench.db"
    generated = time.perf_counter()
    generate(db_path, size)
    generation_seconds = time.perf_counter() - generated
    result = subprocess.run(
        [sys.executable, __file__, "--child", str(db_path), str(folder / "blobs"), "--chunk-size", str(chunk_size)],
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("ACCRUE_")},
    )
    if result.returncode != 0:
        raise SystemExit(f"child failed for {size}:\n{result.stderr}")
    data: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    if data["paid"] != size or data["rewards"] != size:
        raise SystemExit(f"size {size}: paid {data['paid']} of {size}")
    data["size"] = size
    data["generation_seconds"] = generation_seconds
    data["rate"] = size / data["run_seconds"]
    data["scan_ratio"] = data["run_seconds"] / data["scan_seconds"]
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--chunk-size", type=int, default=5000)
    parser.add_argument("--child", nargs=2, metavar=("DB", "BLOBS"))
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), args.chunk_size)
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="payout-bench-") as tmp:
        for size in args.sizes:
            data = measure(size, Path(tmp), args.chunk_size)
            results.append(data)
            print(
                f"{size:>9,} rewards  {data['referrers']:>7,} referrers  run {data['run_seconds']:6.2f} s  "
                f"{data['rate']:>9,.0f} rewards/s  ({data['scan_ratio']:4.1f} x one GROUP BY scan)  "
                f"peak RSS {data['peak_mib']:6.1f} MiB (after start-up {data['started_mib']:5.1f})  "
                f"report {data['report_bytes'] / 1024:,.0f} KiB",
                flush=True,
            )
    ok = all(r["rate"] >= RATE_GOAL for r in results)
    print(f"goal >= {RATE_GOAL:,} rewards/s at every size: {'met' if ok else 'NOT met'}")
    by_size = {int(r["size"]): r for r in results}
    if 100_000 in by_size and 1_000_000 in by_size:
        ratio = by_size[1_000_000]["peak_mib"] / by_size[100_000]["peak_mib"]
        met = ratio <= MEMORY_RATIO_GOAL
        ok = ok and met
        print(f"peak memory 1M / 100k = {ratio:.2f} (goal <= {MEMORY_RATIO_GOAL}): {'met' if met else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
