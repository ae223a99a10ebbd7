"""The HTTP process's side of the writer process (``entrypoints/writer.py``): starts it, sends it
the API's writes, restarts it if it dies.

Every op sent during one turn of the event loop goes out in one frame, and the writer runs what
one read brings as one group-committed transaction, so a busy server sends few frames and commits
few times. A call returns once the writer has made its op durable, with the op's result or its
exception (domain errors are pickled as they are).

If the writer process ends, the calls in flight fail with 503 (their outcome is unknown: a
keyed request keeps its Idempotency-Key locked, as after a crash, so a retry cannot apply twice
within the lock); the process is started again at once, and calls made meanwhile wait for it (up
to ``wait_seconds``, then 503 with Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from typing import Any, cast

from accrue.entrypoints.api.errors import OUTCOME_UNKNOWN, ApiError
from accrue.entrypoints.api.writes import WriteOp
from accrue.entrypoints.writer import IN_FLIGHT, READY, WAKE, FrameReader, frame

log = logging.getLogger("accrue.writer")


def unavailable(message: str, *, code: str | None = None) -> ApiError:
    return ApiError(503, message, code=code, headers={"Retry-After": "1"})


class _Connection(asyncio.Protocol):
    """One writer process's socket: frames out, replies in."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.reader = FrameReader()
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.outgoing: list[tuple[int, WriteOp | None]] = []
        self.ids = itertools.count(1)
        self.lost = False

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.reader.feed(data)
        except Exception as exc:
            log.exception("unreadable answer from the writer process")
            assert self.transport is not None
            self.transport.abort()
            self._fail(exc)
            return
        for replies in messages:
            for request_id, ok, value in replies:
                if request_id == 0:
                    if value == READY and not self.ready.done():
                        self.ready.set_result(None)
                    continue
                future = self.pending.pop(request_id, None)
                if future is None or future.done():
                    continue  # its caller went away
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc)

    def _fail(self, exc: BaseException | None) -> None:
        self.lost = True
        for future in self.pending.values():
            if not future.done():
                future.set_exception(
                    unavailable(
                        "the writer process stopped; this write may or may not be applied", code=OUTCOME_UNKNOWN
                    )
                )
        self.pending.clear()
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(f"the writer process ended before it was ready: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    # -- calls -------------------------------------------------------------------------------------

    def call(self, op: WriteOp) -> asyncio.Future[Any]:
        if self.lost:
            raise unavailable("the writer process is restarting")
        request_id = next(self.ids)
        future: asyncio.Future[Any] = self.loop.create_future()
        self.pending[request_id] = future
        self._send(request_id, op)
        return future

    def wake(self) -> None:
        if not self.lost:
            self._send(WAKE, None)

    def _send(self, request_id: int, op: WriteOp | None) -> None:
        if not self.outgoing:
            self.loop.call_soon(self._flush)
        self.outgoing.append((request_id, op))

    def _flush(self) -> None:
        outgoing, self.outgoing = self.outgoing, []
        if outgoing and self.transport is not None and not self.lost:
            # With how many writes are in flight, from which the writer sizes its groups.
            self.transport.write(frame([*outgoing, (IN_FLIGHT, len(self.pending))]))


class WriterProcess:
    """Starts and supervises the writer process; ``call`` runs an op there."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        start_timeout_seconds: float = 60.0,
        wait_seconds: float = 10.0,
        restart_delay_seconds: float = 0.5,
    ) -> None:
        self.env = dict(env)
        self.start_timeout_seconds = start_timeout_seconds
        self.wait_seconds = wait_seconds
        self.restart_delay_seconds = restart_delay_seconds
        self.process: subprocess.Popen[bytes] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._connection: _Connection | None = None
        self._up = asyncio.Event()
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None
        self.restarts = 0

    async def start(self) -> None:
        """Start the process and wait until it is ready (raises if it cannot start)."""
        self.loop = asyncio.get_running_loop()
        await self._spawn()
        self._supervisor = self.loop.create_task(self._supervise())

    async def _spawn(self) -> None:
        assert self.loop is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "accrue.entrypoints.writer", "--fd", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                env=self.env,
            )
        finally:
            theirs.close()
        loop = self.loop
        _, connection = await loop.create_unix_connection(lambda: _Connection(loop), sock=ours)
        try:
            await asyncio.wait_for(asyncio.shield(connection.ready), self.start_timeout_seconds)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await asyncio.to_thread(self.process.wait)
            raise
        self._connection = connection
        self._up.set()

    async def _supervise(self) -> None:
        while not self._stopping:
            connection = self._connection
            assert connection is not None
            await connection.closed
            self._up.clear()
            if self._stopping:
                return
            code = await asyncio.to_thread(self._reap)
            log.error("the writer process ended (exit code %s); starting it again", code)
            while not self._stopping:
                await asyncio.sleep(self.restart_delay_seconds)
                try:
                    await self._spawn()
                    self.restarts += 1
                    break
                except Exception:
                    log.exception("the writer process did not start; trying again")

    def _reap(self) -> int | None:
        process = self.process
        if process is None:
            return None
        try:
            return process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    async def call(self, op: WriteOp) -> Any:
        connection = self._connection
        if connection is None or connection.lost:
            try:
                await asyncio.wait_for(self._up.wait(), self.wait_seconds)
            except TimeoutError:
                raise unavailable("the writer process is restarting") from None
            connection = self._connection
            assert connection is not None
        return await connection.call(op)

    def wake(self) -> None:
        """Wake the writer's workers (after a commit made in this process); any thread may call it."""
        loop, connection = self.loop, self._connection
        if loop is None or connection is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(connection.wake)

    async def stop(self, timeout_seconds: float = 15.0) -> None:
        """Close the socket: the writer finishes its group, stops its workers and exits."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        connection = self._connection
        if connection is not None and connection.transport is not None:
            connection.transport.close()
        process = self.process
        if process is None:
            return
        try:
            await asyncio.to_thread(process.wait, timeout_seconds)
        except subprocess.TimeoutExpired:
            log.error("the writer process did not stop within %s s; killing it", timeout_seconds)
            process.kill()
            await asyncio.to_thread(process.wait)


def writer_environment(settings: Any) -> dict[str, str]:
    """The writer process's environment: this one's, with the settings given on the command line."""
    env = dict(os.environ)
    env["ACCRUE_DB"] = str(settings.db)
    return env
