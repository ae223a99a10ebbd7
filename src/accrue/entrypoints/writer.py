"""The writer process of ``accrue serve``: the API's writes and the event pipeline, beside the HTTP
process, so that the two use both cores.

In one CPython process the HTTP layer and the ledger writes share one core (the GIL). With
``ACCRUE_WRITER_PROCESS=true`` (the default) ``accrue serve`` starts this process and hands it, over
a socket pair only the two processes hold, each write the API makes (``WriteOp``: a bus command or
an idempotency-key step). The HTTP process keeps parsing, validation, authentication, reads (SQLite
WAL readers see every commit) and its other work; this process runs the writes and the workers that
work through what they commit (outbox, notification sends, webhook deliveries): the first two on
the same thread as the writes, in slices between them (``PipelineSlices``).

Protocol: frames of a 4-byte big-endian length and a pickle. The HTTP process sends lists of
``(request id, op)``; ``(0, None)`` asks for a wake-up of the workers (after a commit the HTTP
process made itself); ``(-1, n)`` says that n writes (these included) await an answer. This
process runs what arrives as group-committed transactions of about half the writes in flight
(``WriterServer.wave_size``), each op its own savepoint (a refusal undoes only its own writes),
and answers, once a group is durable, with a list of ``(request id, ok, result or exception)``.
It first sends ``(0, True, "ready")``. When the socket closes (the HTTP process ended, even by
SIGKILL) it stops its workers and exits. Pickle is safe here only because the peer is the parent
that created the socket pair: nothing else can connect to it.

    python -m accrue.entrypoints.writer --fd N     (started by ``accrue serve``, not by hand)
"""

from __future__ import annotations

import argparse
import functools
import logging
import pickle
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from accrue.bootstrap import PIPELINE_SERVICES
from accrue.service_layer.background import PollingWorker

log = logging.getLogger("accrue.writer")

HEADER = struct.Struct("!I")
MAX_FRAME_BYTES = 64 * 1024 * 1024
READY = "ready"
WAKE = 0
IN_FLIGHT = -1
# The smallest group that ``wave_size`` splits off: below it, a commit (an fsync) per wave costs
# more than the overlap gains. With 4, writes arriving a few at a time were committed four or five
# to a group (a commit is ~0.45 ms of this process's time here, a write ~0.3 ms); 8, 12 and 16
# compared in alternating runs of bench/api_bench.py's 16-connection case: 8 is best
# (docs/PERFORMANCE.md), 16 never splits and brings back the lock step.
MIN_WAVE = 8


def frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


class FrameReader:
    """Reassembles frames from the bytes of a stream, in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buffer = self._buffer
        buffer += data
        messages: list[Any] = []
        start = 0
        while len(buffer) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer, start)
            if size > MAX_FRAME_BYTES:
                raise ValueError(f"frame of {size} bytes is larger than {MAX_FRAME_BYTES}")
            end = start + HEADER.size + size
            if len(buffer) < end:
                break
            messages.append(pickle.loads(memoryview(buffer)[start + HEADER.size : end]))  # noqa: S301 - our parent
            start = end
        del buffer[:start]
        return messages


def encode_outcomes(replies: list[tuple[int, bool, Any]]) -> bytes:
    """One reply frame; a result or exception that cannot be pickled becomes an error naming it."""
    try:
        return frame(replies)
    except Exception:  # noqa: BLE001 - find the one that fails, answer the others as they are
        safe: list[tuple[int, bool, Any]] = []
        for request_id, ok, value in replies:
            try:
                pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
                safe.append((request_id, ok, value))
            except Exception as exc:  # noqa: BLE001 - reported to the caller instead
                safe.append((request_id, False, RuntimeError(f"the writer could not return {value!r}: {exc}")))
        return frame(safe)


# Between the API's writes, this process's database thread works through the event pipeline
# (``PipelineSlices``). While writes keep coming, the pipeline gets one slice every
# SLICE_INTERVAL_SECONDS, ending after the message that passes SLICE_SECONDS, inside the
# transaction of the group of writes it follows (one commit for both; those writes are answered
# that much later), and the backlog cannot grow without end (about a sixth of the thread is the
# pipeline's). Once no write has come for a whole interval, slices run back to back, each its own
# transaction, until one arrives.
SLICE_SECONDS = 0.002
SLICE_INTERVAL_SECONDS = 0.010
DISPATCH_LIMIT = 3


class _Slice:
    """One pipeline worker run in slices: whether it has work, and one slice of it."""

    def __init__(
        self,
        name: str,
        worker: PollingWorker,
        run: Callable[[float, Callable[[], bool]], int],
    ) -> None:
        self.name = name
        self.worker = worker
        self.run = run
        self.feeds: _Slice | None = None  # the worker that what this one handles gives work to
        self.busy = True  # a first round at start finds whatever was left
        self.next_poll = 0.0

    def due(self, now: float) -> bool:
        if self.worker.take_wake():
            self.busy = True
        return self.busy or now >= self.next_poll


class PipelineSlices:
    """The outbox worker, and the notification dispatcher when its sends stay in the database,
    run on the thread that serves the writes instead of on threads of their own: a write never
    waits for the writer lock or the interpreter while they work, and their commits are few."""

    def __init__(self, app: Any) -> None:
        self.slices: list[_Slice] = []
        self.last_run = time.monotonic()
        if not app.settings.workers_enabled:
            return
        outbox = app.worker
        outbox_slice = _Slice("outbox", outbox, outbox.run_slice)
        self.slices.append(outbox_slice)
        dispatcher = app.services.get("notification_dispatcher")
        if dispatcher is not None and dispatcher.sends_in_database:
            dispatcher.yield_between_sends = False
            dispatch_slice = _Slice(
                "notification_dispatcher",
                dispatcher,
                lambda _deadline, _interrupted: dispatcher.run_slice(DISPATCH_LIMIT),
            )
            self.slices.append(dispatch_slice)
            if not dispatcher.send_on_store:
                # The handlers queue what they store: the dispatcher has work after each outbox
                # slice. Sent at once (the default), only retries are left to it, found by its polls.
                outbox_slice.feeds = dispatch_slice

    @property
    def names(self) -> set[str]:
        return {piece.name for piece in self.slices}

    def wait_seconds(self, now: float, *, quiet: bool) -> float:
        """How long to wait for a write before running a slice (0: run one now). ``quiet``: the
        last wait ended with no write."""
        if not self.slices:
            return 3600.0
        if any(piece.busy for piece in self.slices):
            return 0.0 if quiet else max(0.0, self.last_run + SLICE_INTERVAL_SECONDS - now)
        return max(0.0, min(piece.next_poll for piece in self.slices) - now)

    def may_run(self, now: float) -> bool:
        """Whether a slice is due between two groups of writes."""
        return now - self.last_run >= SLICE_INTERVAL_SECONDS and any(piece.due(now) for piece in self.slices)

    def run(self, interrupted: Callable[[], bool]) -> int:
        """One slice of every worker that has work; returns how much was handled."""
        handled = 0
        start = time.monotonic()
        for piece in self.slices:
            if not piece.due(time.monotonic()):
                continue
            try:
                done = piece.run(start + SLICE_SECONDS, interrupted)
            except Exception:
                log.exception("%s: round failed; the next round retries", piece.name)
                done = 0
            piece.busy = done > 0  # what a slice leaves is still there for the next one
            if not piece.busy:
                piece.next_poll = time.monotonic() + piece.worker.poll_seconds
            if done and piece.feeds is not None:
                piece.feeds.busy = True  # e.g. handled events stored notifications to plan and send
            handled += done
            if interrupted():
                break
        self.last_run = time.monotonic()
        return handled


def _never() -> bool:
    return False


class WriterServer:
    """Runs the ops that arrive on ``sock`` against ``app``, in groups of about half the writes in
    flight, and the event pipeline's slices between them."""

    def __init__(self, app: Any, sock: socket.socket) -> None:
        self.app = app
        self.sock = sock
        self.reader = FrameReader()
        self.max_group: int = app.database.group_max_units
        self.in_flight = 0  # the HTTP process's last word on how many writes await an answer
        self.pipeline = PipelineSlices(app)

    def serve(self) -> None:
        try:
            self._serve()
        except ConnectionError:
            return  # the HTTP process is gone mid-answer

    def _readable(self) -> bool:
        return bool(select.select([self.sock], [], [], 0)[0])

    def _serve(self) -> None:
        self.sock.sendall(frame([(0, True, READY)]))
        pipeline = self.pipeline
        quiet = False
        while True:
            wait = pipeline.wait_seconds(time.monotonic(), quiet=quiet)
            if select.select([self.sock], [], [], wait)[0]:
                quiet = False
                if not self._receive():
                    return  # the HTTP process is gone
            else:
                quiet = True
                pipeline.run(self._readable)

    def _receive(self) -> bool:
        """Read what has arrived and run it; False once the HTTP process has closed the socket."""
        data = self.sock.recv(1 << 20)
        if not data:
            return False
        messages = self.reader.feed(data)
        while True:  # whatever else has arrived joins this group
            try:
                more = self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if not more:
                break
            messages += self.reader.feed(more)
        self.handle([request for message in messages for request in message])
        return True

    def handle(self, requests: list[tuple[int, Any]]) -> None:
        ops: list[tuple[int, Any]] = []
        woken = False
        for request_id, op in requests:
            if request_id == WAKE:
                woken = True
            elif request_id == IN_FLIGHT:
                self.in_flight = int(op)
            else:
                ops.append((request_id, op))
        if woken:
            self.wake()
        size = self.wave_size(len(ops))
        for start in range(0, len(ops), size):
            chunk = ops[start : start + size]
            jobs: list[Callable[[], Any]] = [functools.partial(op.apply, self.app) for _, op in chunk]
            # A slice due while writes keep coming joins the last group's transaction (a savepoint
            # of its own, like each write): one commit, and one fsync, for both.
            slice_here = start + size >= len(ops) and self.pipeline.may_run(time.monotonic())
            if slice_here:
                jobs.append(functools.partial(self.pipeline.run, _never))
            outcomes = self.app.database.run_group(jobs)
            if slice_here:
                ok, value = outcomes.pop()
                if not ok:
                    log.error("pipeline slice failed: %r", value)
            replies = [(request_id, ok, value) for (request_id, _), (ok, value) in zip(chunk, outcomes, strict=True)]
            self.sock.sendall(encode_outcomes(replies))

    def wave_size(self, arrived: int) -> int:
        """How many of the ``arrived`` ops go in one group: half of the writes in flight (at least
        ``MIN_WAVE``), so that two waves take turns. While this process runs one, the HTTP process
        answers the other and parses the requests that follow; one group for everything in
        flight would leave each process waiting for the other in turn."""
        if self.in_flight <= 0:
            return self.max_group
        return max(1, min(self.max_group, max(MIN_WAVE, -(-self.in_flight // 2)), arrived))

    def wake(self) -> None:
        self.app.worker.wake()
        for name in PIPELINE_SERVICES:
            service = self.app.services.get(name)
            if service is not None:
                service.wake()


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="accrue-writer", description="the writer process of accrue serve")
    parser.add_argument("--fd", type=int, required=True, help="the socket inherited from accrue serve")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="accrue-writer %(levelname)s %(name)s: %(message)s")
    sock = socket.socket(fileno=args.fd)
    # Ctrl-C in a terminal reaches the whole process group: the HTTP process shuts down and closes
    # the socket, which ends this one after its last group. SIGTERM ends it at once (no reply is
    # sent for a group that had not committed; the HTTP process answers those 503).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_signal)

    from accrue.bootstrap import bootstrap
    from accrue.config import Settings
    from accrue.entrypoints.cli import tune_for_serving

    app = bootstrap(Settings())
    try:
        server = WriterServer(app, sock)
        app.start_background(part="pipeline", run_elsewhere=server.pipeline.names)
        tune_for_serving()
        server.serve()
    finally:
        app.close()
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
