"""Where a write request's CPU goes, without a socket: the ASGI app called in process.

Complements ``api_bench.py`` (which measures through uvicorn and wrk): in one process, 16 concurrent
callers on one event loop, it measures CPU microseconds per request of

- ``GET /health``;
- ``POST /transactions`` with the database work replaced by a canned result (HTTP layer only:
  routing, body parsing, validation, the JWT check, dependencies, the JSON response);
- ``POST /transactions`` for real (plus the ledger posting, grouped and committed as in the server);
- the posting alone: ``RecordTransaction`` through the bus, 16 to a group, no HTTP.

    .venv/bin/python bench/api_cost_bench.py [--requests 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

SECRET = "api-cost-bench-secret-0123456789abcdef0123456789"
CONNECTIONS = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000, help="requests per scenario and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="api-cost-"))
    os.environ.update(
        {
            "ACCRUE_ENV": "test",
            "ACCRUE_DB": str(folder / "cost.db"),
            "ACCRUE_BLOB_DIR": str(folder / "blobs"),
            "ACCRUE_INBOX_DIR": str(folder / "inbox"),
            "ACCRUE_JWT_SECRET": SECRET,
            "ACCRUE_RATE_LIMIT_PER_SECOND": "0",
        }
    )
    from accrue.bootstrap import bootstrap
    from accrue.config import Settings
    from accrue.domain import commands
    from accrue.domain.loyalty import Tier
    from accrue.entrypoints.api.app import create_app
    from accrue.entrypoints.api.routers import loyalty
    from accrue.entrypoints.api.security import issue_token
    from accrue.service_layer.handlers import TransactionResult

    application = bootstrap(Settings())
    app = create_app(application)
    token = issue_token(SECRET, sub="bench-pos", role="service").encode()
    counter = 0

    def next_body() -> bytes:
        nonlocal counter
        counter += 1
        return b'{"memberId":"m-%d","transactionAmount":"%d.%02d","transactionType":"purchase"}' % (
            counter % 2000,
            10 + counter % 990,
            counter % 100,
        )

    async def call(method: str, path: str, body: bytes = b"") -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "scheme": "http",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50000),
            "headers": [
                (b"host", b"bench"),
                (b"content-type", b"application/json"),
                (b"authorization", b"Bearer " + token),
                (b"content-length", str(len(body)).encode()),
            ],
        }
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        if status != [200]:
            raise RuntimeError(f"{method} {path} answered {status}")

    async def cpu_per_call(n: int, fn: Callable[[], Awaitable[None]]) -> float:
        async def caller() -> None:
            for _ in range(n // CONNECTIONS):
                await fn()

        started = time.process_time()
        await asyncio.gather(*(caller() for _ in range(CONNECTIONS)))
        return (time.process_time() - started) / (n // CONNECTIONS * CONNECTIONS) * 1e6

    real_run_op = loyalty.run_op

    async def canned(_app: Any, _op: Any) -> TransactionResult:
        return TransactionResult(transaction_id="txn_canned", points_earned=5, total_points=5, tier=Tier.BRONZE)

    def postings_alone(n: int) -> float:
        nonlocal counter
        database = application.database
        assert database is not None
        started = time.process_time()
        for _ in range(n // CONNECTIONS):
            with database.group():
                for _ in range(CONNECTIONS):
                    counter += 1
                    command = commands.RecordTransaction(
                        member_id=f"m-{counter % 2000}",
                        amount=Decimal("12.34"),
                        transaction_type="purchase",
                        email=None,
                    )
                    with database.write():
                        application.bus.handle(command)
        return (time.process_time() - started) / (n // CONNECTIONS * CONNECTIONS) * 1e6

    async def run() -> dict[str, list[float]]:
        results: dict[str, list[float]] = {}
        loyalty.run_op = real_run_op
        await cpu_per_call(4000, lambda: call("POST", "/transactions", next_body()))  # enrol the members
        for _ in range(args.rounds):
            loyalty.run_op = real_run_op
            health = await cpu_per_call(args.requests, lambda: call("GET", "/health"))
            results.setdefault("GET /health", []).append(health)
            loyalty.run_op = canned  # type: ignore[assignment]
            results.setdefault("POST /transactions, canned result", []).append(
                await cpu_per_call(args.requests, lambda: call("POST", "/transactions", next_body()))
            )
            loyalty.run_op = real_run_op
            results.setdefault("POST /transactions", []).append(
                await cpu_per_call(args.requests // 2, lambda: call("POST", "/transactions", next_body()))
            )
            results.setdefault("posting alone (bus, groups of 16)", []).append(postings_alone(args.requests // 2))
        return results

    gc.collect()
    gc.freeze()  # as `accrue serve` does
    try:
        results = asyncio.run(run())
    finally:
        loyalty.run_op = real_run_op
        application.close()
    health = statistics.median(results["GET /health"])
    print(f"in-process ASGI calls, {CONNECTIONS} concurrent callers, median of {args.rounds} rounds (CPU us/request)")
    for name, values in results.items():
        value = statistics.median(values)
        rounds = ", ".join(f"{v:.0f}" for v in values)
        print(f"{name:<36} {value:>7.0f}  {value / health:>5.2f} x health   rounds: {rounds}")


if __name__ == "__main__":
    sys.exit(main())
