"""Where the HTTP layer runs work that writes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from accrue.bootstrap import Application

T = TypeVar("T")


async def run_write(app: Application, work: Callable[[], T]) -> T:
    """Run ``work`` (reads and commands through the bus) where writes are cheapest, and return once
    its writes are durable: on SQLite, on the event loop itself, in a group with the writes of
    concurrent requests (one fsync in a thread for the group, each request still atomic); elsewhere
    the thread pool."""
    if app.database is not None:
        return await app.database.write_in_loop(work)
    return await run_in_threadpool(work)
