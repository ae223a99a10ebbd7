"""`accrue serve` with its writer process, as processes: the writer is restarted when it dies,
ends when the HTTP process is killed, and the single-process setting still serves."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.cli_support import ledger_check
from tests.conftest import LiveServer, wait_for

pytestmark = pytest.mark.slow


def writer_pids(server: LiveServer) -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{server.process.pid}/task").iterdir():
        pids += [int(p) for p in (task / "children").read_text().split()]
    return [p for p in pids if b"accrue.entrypoints.writer" in Path(f"/proc/{p}/cmdline").read_bytes()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def purchase(api: object, member: str, amount: str = "100.00") -> object:
    return api.post(  # type: ignore[attr-defined]
        "/transactions", json={"memberId": member, "transactionAmount": amount, "transactionType": "purchase"}
    )


def test_a_killed_writer_process_is_started_again_and_writes_go_on(live_server: LiveServer) -> None:
    [first] = writer_pids(live_server)
    with live_server.client() as api:
        assert purchase(api, "wp-1").status_code == 200
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not alive(first), timeout=10)
        # Calls made while it restarts wait for it (or are told 503 with Retry-After).
        deadline = time.monotonic() + 20
        while True:
            answer = purchase(api, "wp-1")
            if answer.status_code == 200:
                break
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] == "1"
            assert time.monotonic() < deadline, "the writer process did not come back"
            time.sleep(0.2)
        [second] = writer_pids(live_server)
        assert second != first
        points = api.get("/points/wp-1").json()["data"]
        # The second purchase was applied once: 10 + 10 points, nothing lost, nothing twice.
        assert points["balance"] == 20
    assert ledger_check(live_server.db, live_server.env).returncode == 0


def test_the_writer_process_ends_when_the_http_process_is_killed(live_server: LiveServer) -> None:
    [writer] = writer_pids(live_server)
    live_server.process.send_signal(signal.SIGKILL)
    live_server.process.wait(10)
    wait_for(lambda: not alive(writer), timeout=15)


def test_with_the_writer_process_off_one_process_serves_everything(server_factory: object) -> None:
    server: LiveServer = server_factory(ACCRUE_WRITER_PROCESS="false")  # type: ignore[operator]
    assert writer_pids(server) == []
    with server.client() as api:
        answer = purchase(api, "sp-1", "12000.00")
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"]["tier"] == "SILVER"
