"""Where the HTTP layer runs work that writes.

A write is either a closure run on this process's database (``run_write``) or a ``WriteOp``: a
small picklable description of the write (a bus command, an idempotency-key step) that ``run_op``
hands to the writer process when ``accrue serve`` runs one (``Application.writer``, see
``entrypoints/writer.py``), and otherwise runs here exactly as ``run_write`` would.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from starlette.concurrency import run_in_threadpool

from accrue.bootstrap import Application
from accrue.domain.commands import Command

if TYPE_CHECKING:
    from accrue.ports import IdempotencyOutcome

T = TypeVar("T")


class WriteOp(abc.ABC):
    """One write the HTTP layer asks for, run by ``apply`` inside a unit of work's savepoint of a
    group-committed transaction (here or in the writer process). Subclasses are frozen dataclasses
    of picklable values."""

    @abc.abstractmethod
    def apply(self, app: Application) -> Any:
        """Do the write on ``app``; the result (or the exception) is the caller's."""


# Without slots: a dataclass with a __dict__ is unpickled by one C-level dict update, one with slots
# by a Python setattr per field (a tenth of the writer process's time per op went to unpickling).


@dataclass(frozen=True)
class Handle(WriteOp):
    """A command through the message bus."""

    command: Command

    def apply(self, app: Application) -> Any:
        return app.bus.handle(self.command)


@dataclass(frozen=True)
class BeginKey(WriteOp):
    """Claim an Idempotency-Key (or learn that it was used)."""

    scope: str
    key: str
    request_hash: str

    def apply(self, app: Application) -> IdempotencyOutcome:
        return app.idempotency.begin(self.scope, self.key, self.request_hash, app.clock())


@dataclass(frozen=True)
class CompleteKey(WriteOp):
    """Store the response of a keyed request, for replays."""

    scope: str
    key: str
    status_code: int
    body: bytes

    def apply(self, app: Application) -> None:
        app.idempotency.complete(self.scope, self.key, self.status_code, self.body, app.clock())


@dataclass(frozen=True)
class ReleaseKey(WriteOp):
    """Give a key back (nothing was applied), so the client may retry with it."""

    scope: str
    key: str

    def apply(self, app: Application) -> None:
        app.idempotency.release(self.scope, self.key)


class RemoteWriter(Protocol):
    """The writer process as the HTTP process sees it (``entrypoints/api/writer_client.py``)."""

    async def call(self, op: WriteOp) -> Any: ...

    def wake(self) -> None: ...


async def run_op(app: Application, op: WriteOp) -> Any:
    """Run ``op`` where this deployment runs the API's writes; returns once it is durable."""
    writer: RemoteWriter | None = app.writer
    if writer is not None:
        return await writer.call(op)
    return await run_write(app, lambda: op.apply(app))


async def run_write(app: Application, work: Callable[[], T]) -> T:
    """Run ``work`` (reads and commands through the bus) where writes are cheapest, and return once
    its writes are durable: on SQLite, on the event loop itself, in a group with the writes of
    concurrent requests (one fsync in a thread for the group, each request still atomic); elsewhere
    the thread pool."""
    if app.database is not None:
        return await app.database.write_in_loop(work)
    return await run_in_threadpool(work)
