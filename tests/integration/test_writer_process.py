"""The writer process's protocol and server, in this process: frames, refusals that travel back as
themselves, one group per read, wake-ups, and what a caller sees when the writer goes away."""

from __future__ import annotations

import asyncio
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from accrue.bootstrap import Application
from accrue.domain import commands
from accrue.domain.errors import (
    ConcurrencyConflict,
    Conflict,
    DomainError,
    InsufficientPoints,
    InvalidInput,
    NotFound,
    RuleViolation,
)
from accrue.domain.webhooks import UrlRefused, WebhookRejected
from accrue.entrypoints.api.errors import OUTCOME_UNKNOWN, ApiError, to_response
from accrue.entrypoints.api.writer_client import _Connection
from accrue.entrypoints.api.writes import BeginKey, CompleteKey, Handle
from accrue.entrypoints.writer import (
    HEADER,
    IN_FLIGHT,
    MAX_FRAME_BYTES,
    MIN_WAVE,
    READY,
    WAKE,
    FrameReader,
    WriterServer,
    frame,
)
from accrue.ports import Replay, Started


def test_frames_split_anywhere_are_read_back_whole_and_in_order() -> None:
    messages = [[(1, "a")], [(2, Decimal("12.34")), (3, None)], [(4, b"x" * 70_000)]]
    stream = b"".join(frame(m) for m in messages)
    for step in (1, 3, 7, 4096, len(stream)):
        reader = FrameReader()
        seen: list[Any] = []
        for start in range(0, len(stream), step):
            seen += reader.feed(stream[start : start + step])
        assert seen == messages


def test_a_frame_announcing_more_than_the_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="larger than"):
        FrameReader().feed(HEADER.pack(MAX_FRAME_BYTES + 1) + b"\0")


@pytest.mark.parametrize(
    "error",
    [
        InvalidInput("transactionAmount", "must not be negative"),
        NotFound("user u1 not found", details={"field": "userId"}),
        Conflict("an order with this orderId already exists", details={"field": "orderId"}),
        InsufficientPoints("balance 5 is less than 10", details={"balance": 5}),
        RuleViolation("USD has 2 decimals"),
        ConcurrencyConflict("member changed"),
        WebhookRejected("bad signature"),
        UrlRefused("loopback addresses are refused"),
    ],
)
def test_domain_errors_cross_the_process_boundary_as_themselves(error: DomainError) -> None:
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert type(copy) is type(error)
    assert copy.__dict__ == error.__dict__
    assert copy.args == error.args
    # ... so the HTTP process answers exactly as if the refusal had been made there.
    assert bytes(to_response(copy).body) == bytes(to_response(error).body)


class Peer:
    """The HTTP side of a socket pair, talking to a WriterServer on a thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = FrameReader()
        self.ids = iter(range(1, 1_000_000))

    def replies(self, count: int) -> list[tuple[int, bool, Any]]:
        got: list[tuple[int, bool, Any]] = []
        while len(got) < count:
            data = self.sock.recv(1 << 20)
            assert data, "the writer closed the socket"
            for message in self.reader.feed(data):
                got += message
        return got

    def frames(self, count: int) -> list[list[tuple[int, bool, Any]]]:
        """The next ``count`` answers, one list per frame (the writer answers each group in one)."""
        got: list[list[tuple[int, bool, Any]]] = []
        while sum(map(len, got)) < count:
            data = self.sock.recv(1 << 20)
            assert data, "the writer closed the socket"
            got += self.reader.feed(data)
        return got

    def send(self, *ops: Any, in_flight: int | None = None) -> list[int]:
        request_ids = [next(self.ids) for _ in ops]
        message: list[tuple[int, Any]] = list(zip(request_ids, ops, strict=True))
        if in_flight is not None:
            message.append((IN_FLIGHT, in_flight))
        self.sock.sendall(frame(message))
        return request_ids


@pytest.fixture
def writer(app: Application) -> Iterator[Peer]:
    ours, theirs = socket.socketpair()
    server = WriterServer(app, theirs)
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    peer = Peer(ours)
    assert peer.replies(1) == [(0, True, READY)]
    yield peer
    ours.close()
    thread.join(10)
    assert not thread.is_alive(), "the writer did not stop when its peer closed the socket"
    theirs.close()


def purchase(member: str, amount: str) -> Handle:
    return Handle(commands.RecordTransaction(member_id=member, amount=Decimal(amount), transaction_type="purchase"))


def redeem(member: str, points: int) -> Handle:
    return Handle(commands.RedeemPoints(user_id=member, points=points))


def test_one_read_is_one_transaction_and_a_refusal_undoes_only_its_own_writes(app: Application, writer: Peer) -> None:
    request_ids = writer.send(purchase("w1", "100.00"), redeem("w1", 1_000), purchase("w2", "50.00"))
    replies = writer.replies(3)
    assert [r[0] for r in replies] == request_ids
    (_, ok1, first), (_, ok2, refusal), (_, ok3, third) = replies
    assert ok1 and first.points_earned == 10 and first.total_points == 10
    assert not ok2 and isinstance(refusal, InsufficientPoints)
    assert ok3 and third.points_earned == 5
    assert app.database is not None
    with app.database.connection() as conn:
        balances = dict(conn.execute("SELECT user_id, balance FROM members WHERE user_id IN ('w1', 'w2')").fetchall())
    assert balances == {"w1": 10, "w2": 5}  # the refused redemption left nothing behind


def test_writes_are_grouped_in_two_waves_of_half_of_those_in_flight(app: Application, writer: Peer) -> None:
    # 16 in flight: two groups of 8, the first answered (durable) while the second runs.
    request_ids = writer.send(*(purchase(f"v{i}", "10.00") for i in range(16)), in_flight=16)
    waves = writer.frames(16)
    assert [len(wave) for wave in waves] == [8, 8]
    assert [r[0] for wave in waves for r in wave] == request_ids
    assert all(ok for wave in waves for _, ok, _ in wave)
    # Fewer in flight: no wave smaller than MIN_WAVE (8) is split off (a commit each would cost more).
    assert MIN_WAVE == 8
    writer.send(*(purchase(f"v{i}", "10.00") for i in range(12)), in_flight=12)
    assert [len(wave) for wave in writer.frames(12)] == [8, 4]
    writer.send(*(purchase(f"v{i}", "10.00") for i in range(6)), in_flight=6)
    assert [len(wave) for wave in writer.frames(6)] == [6]
    with app.bus.uow_factory(readonly=True) as uow:
        balances = {m.user_id: m.balance for m in uow.members.get_many([f"v{i}" for i in range(16)])}
    assert balances == {f"v{i}": 3 if i < 6 else 2 if i < 12 else 1 for i in range(16)}


def test_idempotency_steps_run_in_the_writer_like_any_write(app: Application, writer: Peer) -> None:
    writer.send(BeginKey("service:pos", "k-1", "hash-1"))
    assert isinstance(writer.replies(1)[0][2], Started)
    writer.send(CompleteKey("service:pos", "k-1", 200, b'{"success":true}'))
    assert writer.replies(1)[0][1] is True
    writer.send(BeginKey("service:pos", "k-1", "hash-1"))
    replay = writer.replies(1)[0][2]
    assert isinstance(replay, Replay) and replay.body == b'{"success":true}'


def test_a_wake_up_reaches_the_pipeline_workers_and_gets_no_answer(app: Application, writer: Peer) -> None:
    woken = threading.Event()
    app.worker.wake = woken.set  # type: ignore[method-assign]
    writer.sock.sendall(frame([(WAKE, None)]))
    assert woken.wait(5)
    writer.send(purchase("w3", "10.00"))
    assert [r[0] for r in writer.replies(1)] == [1]  # the next answer is the purchase's, not the wake-up's


def test_calls_in_flight_when_the_writer_goes_away_fail_503_with_an_unknown_outcome() -> None:
    async def scenario() -> ApiError:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        _, connection = await loop.create_unix_connection(lambda: _Connection(loop), sock=ours)
        theirs.sendall(frame([(0, True, READY)]))
        await connection.ready
        pending = connection.call(purchase("w4", "1.00"))
        await asyncio.sleep(0.05)
        theirs.close()  # the writer process died holding the call
        with pytest.raises(ApiError) as caught:
            await pending
        with pytest.raises(ApiError, match="restarting"):
            connection.call(purchase("w4", "1.00"))
        return caught.value

    error = asyncio.run(scenario())
    assert error.status_code == 503
    assert error.code == OUTCOME_UNKNOWN
    assert error.headers == {"Retry-After": "1"}


def test_the_http_side_tells_the_writer_how_many_writes_are_in_flight() -> None:
    async def scenario() -> list[list[tuple[int, Any]]]:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        _, connection = await loop.create_unix_connection(lambda: _Connection(loop), sock=ours)
        theirs.sendall(frame([(0, True, READY)]))
        await connection.ready
        first = [connection.call(purchase(f"w{i}", "1.00")) for i in range(3)]
        await asyncio.sleep(0.05)  # sent: the three are in flight
        second = [connection.call(purchase(f"x{i}", "1.00")) for i in range(2)]
        await asyncio.sleep(0.05)
        reader, frames = FrameReader(), []
        while sum(len(f) for f in frames) < 7:
            frames += reader.feed(await loop.run_in_executor(None, theirs.recv, 1 << 20))
        for call in first + second:
            call.cancel()
        theirs.close()
        return frames

    frames = asyncio.run(scenario())
    assert [f[-1] for f in frames] == [(IN_FLIGHT, 3), (IN_FLIGHT, 5)]  # the second batch: 2 new + 3 unanswered
    assert [len(f) for f in frames] == [4, 3]


def notification_count(app: Application) -> int:
    assert app.database is not None
    with app.database.connection() as conn:
        return int(conn.execute("SELECT COUNT(*) FROM notifications").fetchone()[0])


def unsent_count(app: Application) -> int:
    assert app.database is not None
    with app.database.connection() as conn:
        return int(
            conn.execute(
                "SELECT (SELECT COUNT(*) FROM outbox WHERE status = 'pending')"
                " + (SELECT COUNT(*) FROM notification_queue)"
                " + (SELECT COUNT(*) FROM notification_sends WHERE status IN ('pending', 'sending'))"
            ).fetchone()[0]
        )


def wait_for(condition: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_the_event_pipeline_runs_on_the_writers_own_thread_between_writes(app: Application, writer: Peer) -> None:
    # No thread of its own: the outbox worker and the (local) dispatcher run in the server's slices.
    assert app.worker._thread is None
    assert app.services["notification_dispatcher"]._thread is None
    writer.send(purchase("p1", "12000.00"))  # 1 200 points: milestones 100 and 500, BRONZE -> SILVER
    assert writer.replies(1)[0][1] is True
    assert wait_for(lambda: notification_count(app) == 2 and unsent_count(app) == 0)
    with app.database.connection() as conn:  # type: ignore[union-attr]
        sends = conn.execute("SELECT channel, status FROM notification_sends ORDER BY channel").fetchall()
    assert {status for _, status in sends} <= {"sent", "skipped"} and len(sends) == 6  # 3 channels x 2


def test_a_stream_of_writes_that_never_lets_up_still_leaves_the_pipeline_its_slices(
    app: Application, writer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from accrue.entrypoints.writer import PipelineSlices

    modes: list[str] = []
    original = PipelineSlices.run

    def run(self: PipelineSlices, interrupted: Any) -> int:
        # In a quiet moment a slice stops when a write arrives (``WriterServer._readable``); the
        # slice due between two groups of writes cannot be interrupted (a constant False).
        modes.append("quiet" if hasattr(interrupted, "__self__") else "between writes")
        return original(self, interrupted)

    monkeypatch.setattr(PipelineSlices, "run", run)
    # No quiet moment at all: the server waits for writes only, so the pipeline can run only in
    # the slices due between groups of writes.
    monkeypatch.setattr(PipelineSlices, "wait_seconds", lambda self, now, quiet: 3600.0)
    in_flight = 8
    sent = answered = 0
    total = 400
    while answered < total:
        while sent < total and sent - answered < in_flight:
            writer.send(purchase(f"s{sent}", "12000.00"))
            sent += 1
        answered += len(writer.replies(1))
    handled_during_stream = notification_count(app)
    assert modes and set(modes) == {"between writes"}
    assert handled_during_stream > 0, "no event was handled while the writes went on"
    # Once the writes stop the server waits for the pipeline again (woken up here), and the rest
    # is done too: every member has its two notifications.
    monkeypatch.undo()
    writer.sock.sendall(frame([(WAKE, None)]))
    assert wait_for(lambda: notification_count(app) == 2 * total and unsent_count(app) == 0, 60)


def test_a_slice_that_fails_inside_a_group_of_writes_undoes_only_itself(
    app: Application, writer: Peer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from accrue.entrypoints.writer import PipelineSlices

    written: list[str] = []

    def failing_slice(self: PipelineSlices, interrupted: Any) -> int:
        assert app.database is not None
        # Writes something in the group's transaction, then fails: its savepoint is undone.
        conn = app.database.writer_connection()
        conn.execute(
            "INSERT INTO notification_preferences (user_id, email, sms, push, updated_at) "
            "VALUES ('from-the-slice', 0, 0, 0, '2026-12-04T00:00:00+00:00')"
        )
        written.extend(
            r[0] for r in conn.execute("SELECT user_id FROM notification_preferences WHERE user_id = 'from-the-slice'")
        )
        raise RuntimeError("a slice that breaks")

    monkeypatch.setattr(PipelineSlices, "may_run", lambda self, now: True)  # a slice in every group
    monkeypatch.setattr(PipelineSlices, "run", failing_slice)
    writer.send(purchase("g1", "100.00"), purchase("g2", "200.00"))
    replies = writer.replies(2)
    assert [ok for _, ok, _ in replies] == [True, True]
    assert written == ["from-the-slice"]  # it was there inside the transaction
    assert any("pipeline slice failed" in r.getMessage() for r in caplog.records)
    with app.database.connection() as conn:  # type: ignore[union-attr]
        users = {r[0] for r in conn.execute("SELECT user_id FROM members").fetchall()}
        kept = conn.execute("SELECT COUNT(*) FROM notification_preferences").fetchone()[0]
    assert {"g1", "g2"} <= users and kept == 0
