"""CPU per notification of the pipeline behind the loyalty core's writes, in process: the outbox
handlers that store notifications, and the dispatch of those notifications to the channels.

Members earn a milestone notification each (six purchases of 250.00 for each of 200 members per
round: 150 points, milestone 100). Each round measures, in CPU microseconds per notification, the
outbox messages handled (the milestone handler: four templates rendered, the notification stored)
plus the dispatch of what they stored, three ways:

- ``at once``: every channel local, the handler that stores a notification sends it in the same
  unit of work (``NotificationDispatcher.store``, as ``accrue serve`` runs it): no queue;
- ``queued, one pass``: queued by the handler, then planned and sent in one pass by the
  dispatcher's round (``plan_and_send``: each send made as it is planned);
- ``queued, claiming``: queued, then the path every channel on the network takes (plan, claim,
  send, record: ``plan_queued`` then ``send_due``).

All three write to local outboxes, alternating rounds, in one process: the ratios are the
measurement (this machine's speed changes from minute to minute). Outbox slices of 2 ms and
dispatch slices of 3 notifications, as the writer process runs them.

    .venv/bin/python bench/pipeline_bench.py [--rounds 6] [--members 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--members", type=int, default=200)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="accrue-pipeline-bench-"))
    os.environ.update(
        ACCRUE_ENV="test",
        ACCRUE_DB=str(folder / "bench.db"),
        ACCRUE_BLOB_DIR=str(folder / "blobs"),
        ACCRUE_INBOX_DIR=str(folder / "inbox"),
        ACCRUE_JWT_SECRET="pipeline-bench-secret-0123456789abcdef0123456789",
        ACCRUE_WORKERS_ENABLED="false",
    )
    from accrue.bootstrap import bootstrap
    from accrue.config import Settings
    from accrue.domain.commands import RecordTransaction
    from accrue.entrypoints.writer import DISPATCH_LIMIT

    app = bootstrap(Settings())
    dispatcher = app.services["notification_dispatcher"]
    dispatcher.yield_between_sends = False
    assert dispatcher.sends_in_database, "the benchmark needs every channel local"
    database = app.database
    assert database is not None

    def claiming() -> int:
        with dispatcher.transaction_group():
            return int(dispatcher.plan_queued(DISPATCH_LIMIT) + dispatcher.send_due(DISPATCH_LIMIT))

    def one_pass() -> int:
        with dispatcher.transaction_group():
            return int(dispatcher.plan_and_send(DISPATCH_LIMIT) + dispatcher.send_due(DISPATCH_LIMIT))

    def count(sql: str) -> int:
        return int(database.connection().execute(sql).fetchone()[0])

    ways: list[tuple[str, str, Callable[[], int] | None]] = [
        ("at once", "a", None),
        ("queued, one pass", "o", one_pass),
        ("queued, claiming", "c", claiming),
    ]
    results: dict[str, list[float]] = {name: [] for name, _, _ in ways}
    for round_no in range(args.rounds):
        for name, tag, dispatch in ways[round_no % 3 :] + ways[: round_no % 3]:
            dispatcher.send_at_once = dispatch is None
            for i in range(args.members * 6):
                app.bus.handle(
                    RecordTransaction(
                        member_id=f"r{round_no}-{tag}-{i % args.members}",
                        amount=Decimal("250.00"),
                        transaction_type="purchase",
                        email=f"r{round_no}.{tag}.{i % args.members}@example.com",
                    )
                )
            stored_before = count("SELECT COUNT(*) FROM notifications")
            started = time.process_time()
            while app.worker.run_slice(time.monotonic() + 0.002, lambda: False):
                pass
            while dispatch is not None and dispatch():
                pass
            notifications = count("SELECT COUNT(*) FROM notifications") - stored_before
            results[name].append((time.process_time() - started) / notifications * 1e6)
            assert count("SELECT COUNT(*) FROM notification_queue") == 0
    unsent = count("SELECT COUNT(*) FROM notification_sends WHERE status NOT IN ('sent', 'skipped')")
    app.close()

    print(f"{sys.implementation.name} {sys.version.split()[0]}, {args.rounds} rounds, {args.members} members each")
    print("CPU us per notification: the outbox message that stores it, and its dispatch to 3 channels")
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, values in results.items():
        rounds = ", ".join(f"{v:.0f}" for v in values)
        print(
            f"{name:18} {medians[name]:7.0f} us  {medians[name] / medians['queued, one pass']:5.2f} x queued, one pass"
            f"   rounds: {rounds}"
        )
    print(f"sends neither sent nor skipped: {unsent}")
    return 0 if unsent == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
