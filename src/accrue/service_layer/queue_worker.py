"""Background consumers of a queue (started by ``accrue serve``), and the queue's dead letters.

A handler returns ``None`` when the message is done, or ``RunLater`` to be woken again after a
delay. A delayed wake-up is sent as a *new* message and the current one deleted, so waiting out a
workflow retry interval does not use up the receive count: the receive count - and with it the
dead-letter queue - only measures deliveries that failed with an exception.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from accrue.ports import Queue, QueueMessage
from accrue.service_layer.dead_letters import DeadLetterView
from accrue.service_layer.payment_workflow_runner import PaymentWorkflowRunner, RunLater

log = logging.getLogger(__name__)

Handler = Callable[[QueueMessage], RunLater | None]


class QueueWorker:
    def __init__(
        self,
        queue: Queue,
        handler: Handler,
        *,
        name: str,
        threads: int = 1,
        batch_size: int = 10,
        poll_seconds: float = 0.5,
        visibility_timeout_seconds: float = 60.0,
    ) -> None:
        self.queue = queue
        self.handler = handler
        self.name = name
        self.threads = threads
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.visibility_timeout_seconds = visibility_timeout_seconds
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def run_once(self, wait_seconds: float = 0.0) -> int:
        """Receive one batch and handle it; returns how many messages were received."""
        messages = self.queue.receive(
            self.batch_size,
            visibility_timeout_seconds=self.visibility_timeout_seconds,
            wait_seconds=wait_seconds,
        )
        done: list[str] = []
        for message in messages:
            if self._handle(message):
                done.append(message.receipt_handle)
        self.queue.delete_batch(done)
        return len(messages)

    def _handle(self, message: QueueMessage) -> bool:
        """True when the message can be deleted."""
        try:
            result = self.handler(message)
        except Exception as exc:  # noqa: BLE001 - any failure is retried by redelivery, then dead-lettered
            error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "%s: message %s failed on receive %d: %s", self.name, message.message_id, message.receive_count, error
            )
            self.queue.change_visibility(message.receipt_handle, self.visibility_timeout_seconds, error=error)
            return False
        if isinstance(result, RunLater):
            self.queue.send(message.body, delay_seconds=result.delay_seconds)
        return True

    def drain(self, *, max_rounds: int = 100_000, until_idle_seconds: float = 0.0) -> None:
        """Handle messages until none is visible (tests, CLI). With ``until_idle_seconds``, keep
        polling until nothing arrived for that long (delayed retries come due meanwhile)."""
        idle = 0.0
        for _ in range(max_rounds):
            if self.run_once() > 0:
                idle = 0.0
                continue
            if idle >= until_idle_seconds:
                return
            step = min(0.05, until_idle_seconds - idle)
            self._stop.wait(step)
            idle += step

    # -- background threads ---------------------------------------------------------------------

    def start(self) -> None:
        if self._threads or self.threads <= 0:
            return
        self._stop.clear()
        for index in range(self.threads):
            thread = threading.Thread(target=self._loop, name=f"{self.name}-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def _loop(self) -> None:
        rounds = 0
        while not self._stop.is_set():
            try:
                self.run_once(wait_seconds=self.poll_seconds)
                rounds += 1
                if rounds % 1000 == 0:
                    self.queue.purge_expired()
            except Exception:  # pragma: no cover - keep consuming; the failed round's messages come back
                log.exception("%s: round failed", self.name)
                self._stop.wait(self.poll_seconds)


def payment_message_handler(runner: PaymentWorkflowRunner) -> Handler:
    def handle(message: QueueMessage) -> RunLater | None:
        payment_id = message.body.get("paymentId")
        if not isinstance(payment_id, str) or not payment_id:
            raise ValueError(f"message {message.message_id} has no paymentId")
        outcome = runner.run(payment_id)
        return outcome if isinstance(outcome, RunLater) else None

    return handle


class QueueDeadLetters:
    """A queue's dead-letter queue as a source for ``GET /admin/dead-letters`` and the CLI."""

    name = "queue"

    def __init__(self, queue: Queue, handler_name: str) -> None:
        self.queue = queue
        self.handler_name = handler_name

    def list(self, limit: int) -> list[DeadLetterView]:
        return [
            DeadLetterView(
                id=f"{self.name}:{m.message_id}",
                source=self.name,
                name=self.queue.name,
                handler=self.handler_name,
                attempts=m.receive_count,
                last_error=m.last_error,
                payload=dict[str, Any](m.body),
            )
            for m in self.queue.dead_letters(limit)
        ]

    def redrive(self, local_id: str) -> bool:
        return self.queue.redrive(local_id)
