"""Background consumers of a queue (started by ``accrue serve``), and the queue's dead letters.

A handler returns the follow-up messages to send (none when the message is simply done). A delayed
wake-up - a workflow retry interval - is a *new* message and the current one is deleted, so waiting
does not use up the receive count: the receive count, and with it the dead-letter queue, only
measures deliveries that failed with an exception.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from accrue.ports import Queue, QueueMessage
from accrue.service_layer.dead_letters import DeadLetterView
from accrue.service_layer.payment_workflow_runner import PaymentWorkflowRunner, RunLater
from accrue.service_layer.payments import payment_ids_of, queue_body

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FollowUp:
    body: Mapping[str, Any]
    delay_seconds: float = 0.0


Handler = Callable[[QueueMessage], Sequence[FollowUp]]


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
        for follow_up in result:
            self.queue.send(follow_up.body, delay_seconds=follow_up.delay_seconds)
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


def payment_message_handler(runner: PaymentWorkflowRunner, *, retry_failed_after_seconds: float = 60.0) -> Handler:
    """Move each payment a message names as far as it can go now.

    A payment that must wait is woken later by a message of its own. In a message naming several
    payments, one that raises is split off into a message of its own (sent after
    ``retry_failed_after_seconds``) so the others are not held back; a single-payment message
    that raises is left to the queue: delivered again, then dead-lettered after maxReceiveCount.
    """

    def handle(message: QueueMessage) -> Sequence[FollowUp]:
        ids = payment_ids_of(message.body)
        follow_ups: list[FollowUp] = []
        for payment_id in ids:
            try:
                outcome = runner.run(payment_id)
            except Exception as exc:
                if len(ids) == 1:
                    raise
                log.warning(
                    "payment %s failed inside a message of %d; retried on its own: %s", payment_id, len(ids), exc
                )
                follow_ups.append(FollowUp(queue_body([payment_id]), retry_failed_after_seconds))
                continue
            if isinstance(outcome, RunLater):
                follow_ups.append(FollowUp(queue_body([payment_id]), outcome.delay_seconds))
        return follow_ups

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
