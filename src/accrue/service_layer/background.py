"""One polling thread shape for the in-process workers (outbox, notifications, webhook delivery)."""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def let_requests_in() -> None:
    """Hand the interpreter to a thread that waits for it (the event loop serving requests) now,
    rather than at the end of the switch interval: called between the items of a background batch,
    it took the API's write p99 from 14 to 12 ms under load (bench/api_bench.py)."""
    time.sleep(0)


class PollingWorker(abc.ABC):
    """Calls ``run_once`` on a daemon thread until stopped.

    After a round that handled nothing it sleeps ``poll_seconds`` or until ``wake()``; a round that
    raises is logged and the next round retries, so one bad round never kills the worker. After a
    round that did handle something it pauses ``linger_seconds`` (if set) before the next one: under
    load, work then comes in batches (fewer transactions, less time holding the writer lock, which
    the API's writes wait for) at the price of that much delay; an idle worker woken starts at once.
    """

    def __init__(self, *, thread_name: str, poll_seconds: float, linger_seconds: float = 0.0) -> None:
        self.thread_name = thread_name
        self.poll_seconds = poll_seconds
        self.linger_seconds = linger_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Also told of every wake-up: the same worker in another process (``accrue serve`` runs the
        # event pipeline in its writer process; commits made in the HTTP process wake it there).
        self.also_wake: Callable[[], None] | None = None

    @abc.abstractmethod
    def run_once(self) -> int:
        """Do one round of work; returns how many items it handled."""

    def wake(self) -> None:
        self._wake.set()
        if self.also_wake is not None:
            self.also_wake()

    def take_wake(self) -> bool:
        """Whether ``wake()`` was called since the last time this was asked (for a caller that runs
        this worker's rounds itself instead of starting its thread)."""
        woken = self._wake.is_set()
        self._wake.clear()
        return woken

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._after_stop()

    def _after_stop(self) -> None:
        """Release what the rounds held (thread pools ...); nothing by default."""
        return

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                handled = self.run_once()
            except Exception:
                log.exception("%s: round failed; the next round retries", self.thread_name)
                handled = 0
            if handled == 0:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
            elif self.linger_seconds > 0:
                self._stop.wait(self.linger_seconds)
