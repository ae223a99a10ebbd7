"""Drains the event outbox after commit: retries with exponential backoff, dead-letters after N failures."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from accrue.domain.events import Event
from accrue.service_layer.messagebus import MessageBus

log = logging.getLogger(__name__)


class OutboxWorker:
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
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.max_attempts = max_attempts
        self.base_delay_seconds = base_delay_seconds
        self.max_delay_seconds = max_delay_seconds
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        self._wake.set()

    def retry_delay(self, attempts_so_far: int) -> timedelta:
        """1 s, 2 s, 4 s, 8 s ... capped: the delay before attempt ``attempts_so_far + 1``."""
        seconds = min(self.base_delay_seconds * (2 ** max(attempts_so_far - 1, 0)), self.max_delay_seconds)
        return timedelta(seconds=seconds)

    def run_once(self) -> int:
        """Process every due message once; returns how many were handled (done, retried or dead)."""
        with self.bus.uow_factory() as uow:
            batch = uow.outbox.claim_due(self.clock(), self.batch_size, self.lease_seconds)
            uow.commit()
        for message in batch:
            self._process(message.message_id)
        return len(batch)

    def deliver(self, message_id: int) -> str:
        """Handle one message now; the DynamoDB stream handler's entry. Returns "done", "skipped"
        (not pending: handled already), "retry" (failed, attempts left) or "dead" (failed for good)."""
        return self._process(message_id)

    def _process(self, message_id: int) -> str:
        error: str | None = None
        with self.bus.uow_factory() as uow:
            message = uow.outbox.get(message_id)
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

    def drain(self, max_rounds: int = 1000) -> None:
        """Process until nothing is due (tests and CLI)."""
        for _ in range(max_rounds):
            if self.run_once() == 0:
                return

    # -- background thread ----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="outbox-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                handled = self.run_once()
            except Exception:  # pragma: no cover - keep the worker alive; the next round retries
                log.exception("outbox worker round failed")
                handled = 0
            if handled == 0:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
