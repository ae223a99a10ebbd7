"""The shape every in-process worker shares: idle rounds sleep until woken, busy rounds linger."""

from __future__ import annotations

import threading
import time

from accrue.service_layer.background import PollingWorker


class Counting(PollingWorker):
    def __init__(self, *, busy: bool, linger_seconds: float = 0.0) -> None:
        super().__init__(thread_name="counting", poll_seconds=30, linger_seconds=linger_seconds)
        self.busy = busy
        self.rounds = 0
        self.round_done = threading.Event()

    def run_once(self) -> int:
        self.rounds += 1
        self.round_done.set()
        return 1 if self.busy else 0


def test_a_busy_worker_lingers_between_rounds_and_stops_at_once() -> None:
    worker = Counting(busy=True, linger_seconds=30)
    worker.start()
    assert worker.round_done.wait(5)
    time.sleep(0.2)
    assert worker.rounds == 1  # the second round waits for the linger to pass
    started = time.monotonic()
    worker.stop()
    assert time.monotonic() - started < 5


def test_without_linger_a_busy_worker_goes_straight_on() -> None:
    worker = Counting(busy=True)
    worker.start()
    deadline = time.monotonic() + 5
    while worker.rounds < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop()
    assert worker.rounds >= 50


def test_an_idle_worker_sleeps_until_woken_then_runs_at_once() -> None:
    worker = Counting(busy=False, linger_seconds=30)
    worker.start()
    assert worker.round_done.wait(5)
    worker.round_done.clear()
    time.sleep(0.1)
    assert worker.rounds == 1  # poll_seconds is 30: nothing until woken
    worker.wake()
    assert worker.round_done.wait(5)
    worker.stop()
    assert worker.rounds == 2
