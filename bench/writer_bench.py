"""CPU per write in the writer process of ``accrue serve``, in process, against the least SQL a
write needs.

``bench/api_bench.py`` measures the whole server through wrk; there the writer process is the
serial step of every ``POST /transactions`` (docs/PERFORMANCE.md). This benchmark replays that
run's write workload on the writer's own code, on one thread, so that its CPU per write can be
measured to a few microseconds:

- ``served``: frames of pickled ``Handle(RecordTransaction)`` ops, as the HTTP process sends them
  (16 in flight: two waves of 8), read by ``FrameReader`` and run by ``WriterServer.handle``
  (group commits, a savepoint per op, replies pickled and sent on a socket), with the event
  pipeline's slices (outbox handlers, notification dispatch) between the groups, as served; the
  pipeline is drained at the end of each round and counted;
- ``writes only``: the same without the pipeline (its outbox rows are still written; handled by
  nobody): the part of ``served`` that the writes themselves cost;
- ``raw SQL``: the statements one such write needs at the least, by hand on the same schema and
  pragmas (read the member, update it, insert the posting, a savepoint per write, a commit per
  wave of 8): the baseline.

The workload is api_bench's: 2 000 members per wrk thread, two threads, enrolled by their first
purchase, amounts 10.00-999.99, so about one write in six crosses a milestone or a tier. Rounds
alternate the three on fresh databases; CPU is the writer thread's own (``time.thread_time``).

    .venv/bin/python bench/writer_bench.py [--writes 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

IN_FLIGHT = 16  # wrk's connections in api_bench's 16-connection run
MEMBERS_PER_THREAD = 2000
WARM_UP_WRITES = 2 * MEMBERS_PER_THREAD  # every member enrolled before the measured writes


def workload(count: int, start: int = 0) -> list[tuple[str, Decimal]]:
    """(member id, amount) of api_bench's write script, two wrk threads taking turns."""
    out: list[tuple[str, Decimal]] = []
    counters = [start // 2, start // 2]
    for k in range(count):
        thread = k % 2
        counters[thread] += 1
        c = counters[thread]
        out.append((f"bench-{thread}-{c % MEMBERS_PER_THREAD}", Decimal(f"{10 + c % 990}.{c % 100:02d}")))
    return out


def environment(folder: Path, *, pipeline: bool) -> None:
    os.environ.update(
        {
            "ACCRUE_ENV": "test",
            "ACCRUE_DB": str(folder / "bench.db"),
            "ACCRUE_BLOB_DIR": str(folder / "blobs"),
            "ACCRUE_INBOX_DIR": str(folder / "inbox"),
            "ACCRUE_JWT_SECRET": "writer-bench-secret-0123456789abcdef0123456789",
            "ACCRUE_WORKERS_ENABLED": "true" if pipeline else "false",
        }
    )


def served(folder: Path, writes: int, *, pipeline: bool) -> float:
    """CPU us per write of the writer process's code; the pipeline's work included when on."""
    environment(folder, pipeline=pipeline)
    from accrue.bootstrap import bootstrap
    from accrue.config import Settings
    from accrue.domain.commands import RecordTransaction
    from accrue.entrypoints.api.writes import Handle
    from accrue.entrypoints.writer import IN_FLIGHT as IN_FLIGHT_ID
    from accrue.entrypoints.writer import FrameReader, WriterServer, frame

    app = bootstrap(Settings())
    ours, theirs = socket.socketpair()

    def read_replies() -> None:
        with contextlib.suppress(OSError):
            while theirs.recv(1 << 20):
                pass

    reader_thread = threading.Thread(target=read_replies, daemon=True)
    reader_thread.start()
    server = WriterServer(app, ours)
    frames_in = FrameReader()

    def frames(items: list[tuple[str, Decimal]]) -> list[bytes]:
        """What the HTTP process sends: IN_FLIGHT ops a frame, with the count in flight."""
        out = []
        for start in range(0, len(items), IN_FLIGHT):
            ops: list[tuple[int, Any]] = [
                (
                    start + i + 1,
                    Handle(RecordTransaction(member_id=m, amount=a, transaction_type="purchase", email=None)),
                )
                for i, (m, a) in enumerate(items[start : start + IN_FLIGHT])
            ]
            out.append(frame([*ops, (IN_FLIGHT_ID, IN_FLIGHT)]))
        return out

    def run(batch: list[bytes]) -> None:
        for data in batch:
            server.handle([request for message in frames_in.feed(data) for request in message])
        while server.pipeline.run(lambda: False):
            pass

    try:
        run(frames(workload(WARM_UP_WRITES)))
        measured = frames(workload(writes, WARM_UP_WRITES))
        started = time.thread_time()
        run(measured)
        return (time.thread_time() - started) / writes * 1e6
    finally:
        app.close()
        ours.close()
        reader_thread.join(5)
        theirs.close()


def raw_sql(folder: Path, writes: int) -> float:
    """CPU us per write of the least SQL the same writes need, on the application's schema."""
    environment(folder, pipeline=False)
    from accrue.adapters.sqlite.codec import iso
    from accrue.bootstrap import bootstrap
    from accrue.config import Settings
    from accrue.domain.ids import new_id
    from accrue.domain.loyalty import points_for

    app = bootstrap(Settings())  # migrations, and the connection pragmas the application uses
    database = app.database
    assert database is not None
    conn: sqlite3.Connection = database.connection()
    now = iso(time_now())

    def write(user_id: str, amount: Decimal) -> None:
        conn.execute("SAVEPOINT w")
        row = conn.execute(
            "SELECT balance, lifetime, total_spent_cents, version FROM members WHERE user_id = ?", (user_id,)
        ).fetchone()
        points = points_for(amount, "purchase")
        transfer_id = new_id("txn")
        if row is None:
            conn.execute(
                "INSERT INTO members (user_id, balance, lifetime, tier, total_spent_cents, referral_code, version,"
                " created_at) VALUES (?,?,?,'BRONZE',?,?,0,?)",
                (user_id, points, points, int(amount * 100), new_id("ref"), now),
            )
            balance = points
        else:
            balance = row[0] + points
            conn.execute(
                "UPDATE members SET balance = ?, lifetime = ?, total_spent_cents = ?, version = version + 1"
                " WHERE user_id = ? AND version = ?",
                (balance, row[1] + points, row[2] + int(amount * 100), user_id, row[3]),
            )
        if points:
            conn.execute(
                "INSERT INTO transfers (transfer_id, debit_account, credit_account, amount, reason, reference,"
                " member_id, member_delta, balance_after, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (transfer_id, "program:issued", f"member:{user_id}:points", points, "earn",
                 f"transaction:{transfer_id}", user_id, points, balance, now),
            )  # fmt: skip
        conn.execute("RELEASE w")

    def run(items: list[tuple[str, Decimal]]) -> None:
        wave = IN_FLIGHT // 2
        for start in range(0, len(items), wave):
            conn.execute("BEGIN IMMEDIATE")
            for user_id, amount in items[start : start + wave]:
                write(user_id, amount)
            conn.execute("COMMIT")

    try:
        run(workload(WARM_UP_WRITES))
        measured = workload(writes, WARM_UP_WRITES)
        started = time.thread_time()
        run(measured)
        return (time.thread_time() - started) / writes * 1e6
    finally:
        app.close()


def time_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=20_000, help="measured writes per scenario and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    scenarios: list[tuple[str, Callable[[Path], float]]] = [
        ("served (writes + pipeline)", lambda folder: served(folder, args.writes, pipeline=True)),
        ("writes only", lambda folder: served(folder, args.writes, pipeline=False)),
        ("raw SQL (baseline)", lambda folder: raw_sql(folder, args.writes)),
    ]
    results: dict[str, list[float]] = {name: [] for name, _ in scenarios}
    for round_no in range(args.rounds):
        order = scenarios if round_no % 2 == 0 else list(reversed(scenarios))
        for name, measure in order:
            with tempfile.TemporaryDirectory(prefix="accrue-writer-bench-") as folder:
                results[name].append(measure(Path(folder)))
    raw = statistics.median(results["raw SQL (baseline)"])
    print(
        f"{sys.implementation.name} {sys.version.split()[0]}, {args.writes} writes a round, "
        f"{IN_FLIGHT} in flight, median of {args.rounds} rounds (writer thread CPU us per write)"
    )
    best_raw = min(results["raw SQL (baseline)"])
    for name, values in results.items():
        value = statistics.median(values)
        rounds = ", ".join(f"{v:.0f}" for v in values)
        print(
            f"{name:28} {value:6.0f} us  {value / raw:5.2f} x raw  (best rounds: {min(values) / best_raw:5.2f} x)"
            f"   rounds: {rounds}"
        )
    pipeline = statistics.median(results["served (writes + pipeline)"]) - statistics.median(results["writes only"])
    print(f"the pipeline's share: {pipeline:.0f} us per write")
    return 0


if __name__ == "__main__":
    sys.exit(main())
