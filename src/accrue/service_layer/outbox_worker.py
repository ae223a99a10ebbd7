"""Drains the event outbox after commit: retries with exponential backoff, dead-letters after N failures."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta

from accrue.domain.events import Event
from accrue.ports import OutboxMessage
from accrue.service_layer.background import PollingWorker, let_requests_in
from accrue.service_layer.messagebus import MessageBus

log = logging.getLogger(__name__)

# Messages read at a time by a slice, which usually has time for a few only.
SLICE_READ = 4


class OutboxWorker(PollingWorker):
    def __init__(
        self,
        bus: MessageBus,
        clock: Callable[[], datetime],
        *,
        max_attempts: int = 5,
        base_delay_seconds: float = 1.0,
        max_delay_seconds: float = 300.0,
        batch_size: int = 100,
        lease_seconds: float = 60.0,
        poll_seconds: float = 1.0,
        transaction_group: Callable[[], AbstractContextManager[object]] | None = None,
        group_seconds: float = 0.01,
        others_waiting: Callable[[], bool] | None = None,
        linger_seconds: float = 0.0,
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.max_attempts = max_attempts
        self.base_delay_seconds = base_delay_seconds
        self.max_delay_seconds = max_delay_seconds
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        # Messages are handled in groups sharing one store transaction (one fsync per group instead
        # of one per message), each message still atomic on its own (a savepoint). A group is kept
        # short so that request handlers waiting for the writer lock are not held up.
        self.transaction_group = transaction_group or contextlib.nullcontext
        self.group_seconds = group_seconds
        # True when another writer (an API request) waits: the group ends after the current message
        # once it has run ``min_group_seconds`` (a group per message would hand the lock back and
        # forth, which costs more than the wait).
        self.others_waiting = others_waiting or (lambda: False)
        self.min_group_seconds = min(0.002, group_seconds)
        super().__init__(thread_name="outbox-worker", poll_seconds=poll_seconds, linger_seconds=linger_seconds)

    def retry_delay(self, attempts_so_far: int) -> timedelta:
        """1 s, 2 s, 4 s, 8 s ... capped: the delay before attempt ``attempts_so_far + 1``."""
        seconds = min(self.base_delay_seconds * (2 ** max(attempts_so_far - 1, 0)), self.max_delay_seconds)
        return timedelta(seconds=seconds)

    def run_once(self) -> int:
        """Process every due message once; returns how many were handled (done, retried or dead)."""
        with self.transaction_group():
            deadline = time.monotonic() + self.group_seconds
            batch = self._claim()
            done = self._process_until(batch, 0, deadline)
        while done < len(batch):
            with self.transaction_group():
                done = self._process_until(batch, done, time.monotonic() + self.group_seconds)
        return len(batch)

    def run_slice(self, deadline: float, interrupted: Callable[[], bool]) -> int:
        """Process due messages on the calling thread, in one transaction group, until ``deadline``
        or until ``interrupted()`` says that more urgent work waits (checked after each message);
        returns how many were handled. The writer process runs the outbox this way, between the
        API's writes, instead of on a thread of its own (see ``entrypoints/writer.py``).

        The messages are read inside the group's write transaction and handled in it, so no other
        worker can take them meanwhile: no lease is written (a claim per message and its undoing
        cost more than the message's own writes), and whatever the slice leaves is simply still
        pending for the next one."""
        if self.transaction_group is contextlib.nullcontext:
            raise RuntimeError("a slice reads and handles its messages in one write transaction group")
        handled = 0
        with self.transaction_group():
            while True:
                with self.bus.uow_factory(readonly=True) as uow:
                    due = uow.outbox.due(self.clock(), SLICE_READ)
                if not due:
                    return handled
                for message in due:
                    self._process(message.message_id, read=message)
                    handled += 1
                    if time.monotonic() >= deadline or interrupted():
                        return handled

    def _claim(self) -> list[int]:
        """Lease the next due messages (committed with the group); their ids, oldest first."""
        with self.bus.uow_factory() as uow:
            batch = [m.message_id for m in uow.outbox.claim_due(self.clock(), self.batch_size, self.lease_seconds)]
            uow.commit()
        return batch

    def _process_until(self, batch: list[int], start: int, deadline: float) -> int:
        """Process from ``start`` until the batch or the time runs out (at least one); returns the next index."""
        index = start
        may_yield_at = time.monotonic() + self.min_group_seconds
        while index < len(batch):
            self._process(batch[index])
            let_requests_in()
            index += 1
            now = time.monotonic()
            if now >= deadline or (now >= may_yield_at and self.others_waiting()):
                break
        return index

    def deliver(self, message_id: int) -> str:
        """Handle one message now; the DynamoDB stream handler's entry. Returns "done", "skipped"
        (not pending: handled already), "retry" (failed, attempts left) or "dead" (failed for good)."""
        return self._process(message_id)

    def _process(self, message_id: int, read: OutboxMessage | None = None) -> str:
        """Handle one message; ``read``: the message as read in the caller's open write transaction
        (else it is read here)."""
        error: str | None = None
        with self.bus.uow_factory() as uow:
            message = read if read is not None else uow.outbox.get(message_id)
            if message is None or message.status != "pending":
                return "skipped"
            try:
                event = Event.from_dict(message.event_name, message.payload)
                self.bus.handle_event(message.handler, event, uow)
                uow.outbox.mark_done(message_id)
                uow.commit()
                return "done"
            except Exception as exc:  # noqa: BLE001 - any handler failure is retried, then dead-lettered
                error = f"{type(exc).__name__}: {exc}"
                attempts = message.attempts + 1
                log.warning("outbox handler %s failed (attempt %d): %s", message.handler, attempts, error)
        # The handler's partial work was rolled back with its unit of work; record the failure apart.
        with self.bus.uow_factory() as uow:
            retry_at = None if attempts >= self.max_attempts else self.clock() + self.retry_delay(attempts)
            uow.outbox.mark_failed(message_id, error, retry_at)
            uow.commit()
        return "retry" if retry_at is not None else "dead"

    def drain(self) -> None:
        """Process until nothing is due (tests and CLI). Ends: a failing message is retried at most
        ``max_attempts`` times, and a retry not yet due is left for later."""
        while self.run_once() > 0:
            pass
