"""HTTP throughput and latency of the write path against the cheapest route, in one run.

Starts a real ``accrue serve`` (SQLite in a temp dir, synchronous=FULL, rate limit off, the writer
process, outbox worker and scheduler running as in production) and drives it with wrk over
loopback: ``GET /health`` (the baseline: no auth, no I/O) and ``POST /transactions`` (a JWT,
validation, one durable ledger write per request; 2 000 members per wrk thread, each enrolled by
its first purchase), at 16 and 64 connections, in alternating rounds (health, then writes, three
times), so that a burst of load from elsewhere on a shared machine lands on both alike; the ratios
are the medians of the rounds'. wrk's Lua ``done`` hook reports req/s and latency percentiles.
After each write run the benchmark waits for the background work it caused (outbox,
notifications) to be done, so that the next health run is not measured beside it; the write runs
include the background work done during them. Server CPU is read from /proc for the HTTP process
and its writer process.

Goals (issue 2): write req/s >= 0.5 x health; write p99 <= 2 x health p99 at the same concurrency
and <= 25 ms at 16 connections.

    make bench-api            # installs wrk from Debian if missing, then runs this
    .venv/bin/python bench/api_bench.py [--duration 5] [--rounds 3] [--connections 16 64] [--single-process]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from accrue.entrypoints.api.security import issue_token

SECRET = "api-bench-secret-0123456789abcdef0123456789"

# wrk reports each run as one JSON line from its done() hook (latencies in microseconds).
REPORT_LUA = r"""
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    'WRK_JSON {"requests": %d, "seconds": %.6f, "errors": %d, "non2xx": %d, '
    .. '"p50": %.1f, "p90": %.1f, "p99": %.1f, "max": %.1f}\n',
    summary.requests, summary.duration / 1e6, errors, summary.errors.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

# Members distinct across wrk threads (2 000 each, enrolled by their first purchase), varying amounts.
WRITE_LUA = r"""
local counter = 0
local next_thread = 0
local token = os.getenv("BENCH_TOKEN")

-- thread_id is a global of each thread's own Lua state, set here (a local of the same name would
-- shadow it, and every thread would post for the same 2 000 members).
setup = function(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
end

request = function()
  counter = counter + 1
  local body = string.format(
    '{"memberId":"bench-%d-%d","transactionAmount":"%d.%02d","transactionType":"purchase"}',
    thread_id, counter %% 2000, 10 + counter %% 990, counter %% 100)
  return wrk.format("POST", "/transactions", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end
""".replace("%%", "%")


@dataclass(frozen=True)
class Result:
    scenario: str
    connections: int
    requests: int
    seconds: float
    errors: int
    non2xx: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    # CPU the server used during the measured run (all its processes and threads, user + system),
    # per request, and in cores; ``writer_cores`` is the part of it used by the writer process.
    server_cpu_us: float
    server_cores: float
    writer_cores: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(folder: Path, port: int, extra_env: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCRUE_")}
    env.update(
        {
            "ACCRUE_ENV": "test",
            "ACCRUE_DB": str(folder / "bench.db"),
            "ACCRUE_BLOB_DIR": str(folder / "blobs"),
            "ACCRUE_INBOX_DIR": str(folder / "inbox"),
            "ACCRUE_JWT_SECRET": SECRET,
            "ACCRUE_RATE_LIMIT_PER_SECOND": "0",
            **extra_env,
        }
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "accrue.entrypoints.cli", "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start")


def wrk(url: str, script: Path, connections: int, threads: int, seconds: int, token: str) -> dict[str, float]:
    completed = subprocess.run(
        [
            "wrk",
            f"-t{min(threads, connections)}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_TOKEN": token},
        check=True,
    )
    for line in completed.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            parsed: dict[str, float] = json.loads(line.removeprefix("WRK_JSON "))
            return parsed
    raise RuntimeError(f"no report from wrk:\n{completed.stdout}\n{completed.stderr}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (every thread) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The server's child processes (the writer process of `accrue serve`)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


def process_cpu(pid: int) -> dict[int, float]:
    """CPU seconds so far of the server and of each of its children, by pid."""
    return {p: cpu_seconds(p) for p in [pid, *child_pids(pid)]}


def measure(
    scenario: str, url: str, script: Path, connections: int, threads: int, seconds: int, token: str, server_pid: int
) -> Result:
    cpu_before, wall_before = process_cpu(server_pid), time.monotonic()
    raw = wrk(url, script, connections, threads, seconds, token)
    cpu_after = process_cpu(server_pid)
    wall = time.monotonic() - wall_before
    used = {p: cpu_after[p] - cpu_before.get(p, 0.0) for p in cpu_after}
    cpu = sum(used.values())
    writer_cpu = cpu - used[server_pid]
    return Result(
        scenario=scenario,
        connections=connections,
        requests=int(raw["requests"]),
        seconds=raw["seconds"],
        errors=int(raw["errors"]),
        non2xx=int(raw["non2xx"]),
        p50_ms=raw["p50"] / 1000,
        p90_ms=raw["p90"] / 1000,
        p99_ms=raw["p99"] / 1000,
        max_ms=raw["max"] / 1000,
        server_cpu_us=cpu / max(raw["requests"], 1) * 1e6,
        server_cores=cpu / wall,
        writer_cores=writer_cpu / wall,
    )


def wait_until_idle(db: Path, timeout_seconds: float = 180.0) -> float:
    """Wait until the server has done the background work the writes caused (outbox, notification
    planning and sends), so that the next run's baseline is not measured beside it. Returns the
    seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_seconds:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            backlog = conn.execute(
                "SELECT (SELECT COUNT(*) FROM outbox WHERE status = 'pending')"
                " + (SELECT COUNT(*) FROM notification_queue)"
                " + (SELECT COUNT(*) FROM notification_sends WHERE status IN ('pending', 'sending'))"
            ).fetchone()[0]
        if backlog == 0:
            break
        time.sleep(0.5)
    return time.monotonic() - started


def ledger_is_sound(db: Path) -> tuple[int, bool]:
    """(postings written, every stored balance equals the sum of its postings)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        postings = conn.execute("SELECT COUNT(*) FROM transfers").fetchone()[0]
        drift = conn.execute(
            "SELECT COUNT(*) FROM members m WHERE m.balance != "
            "(SELECT COALESCE(SUM(member_delta), 0) FROM transfers t WHERE t.member_id = m.user_id)"
        ).fetchone()[0]
    return int(postings), drift == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per measured run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating health/write rounds per concurrency")
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--sync", default="FULL", choices=["FULL", "NORMAL"], help="ACCRUE_SQLITE_SYNCHRONOUS")
    parser.add_argument("--no-workers", action="store_true", help="without the background workers (diagnosis)")
    parser.add_argument(
        "--single-process", action="store_true", help="writes in the HTTP process (ACCRUE_WRITER_PROCESS=false)"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="a setting for the server (diagnosis)"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: run `make bench-deps` (Debian package wrk)")

    folder = Path(tempfile.mkdtemp(prefix="api-bench-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    token = issue_token(SECRET, sub="bench-pos", role="service", ttl_seconds=3600)
    report = folder / "report.lua"
    report.write_text(REPORT_LUA)
    writes = folder / "writes.lua"
    writes.write_text(WRITE_LUA + REPORT_LUA)
    extra = {"ACCRUE_SQLITE_SYNCHRONOUS": args.sync}
    if args.single_process:
        extra["ACCRUE_WRITER_PROCESS"] = "false"
    if args.no_workers:
        extra.update({"ACCRUE_WORKERS_ENABLED": "false", "ACCRUE_SCHEDULER_ENABLED": "false"})
    extra.update(item.split("=", 1) for item in args.env)
    server = start_server(folder, port, extra)
    results: list[Result] = []
    drained: list[float] = []  # seconds the background work of each write run went on after it
    scenarios = [("GET /health", f"{url}/health", report), ("POST /transactions", url, writes)]
    try:
        for connections in args.connections:
            for _, target, script in scenarios:  # warm-up, discarded
                wrk(target, script, connections, args.threads, max(1, args.duration // 5), token)
            drained.append(wait_until_idle(folder / "bench.db"))
            # Alternating rounds: a burst of load from elsewhere on this shared machine then lands
            # on both scenarios alike instead of on one whole measurement.
            for _ in range(args.rounds):
                for scenario, target, script in scenarios:
                    results.append(
                        measure(scenario, target, script, connections, args.threads, args.duration, token, server.pid)
                    )
                drained.append(wait_until_idle(folder / "bench.db"))
        postings, sound = ledger_is_sound(folder / "bench.db")
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(folder, ignore_errors=True)

    mode = "one process" if args.single_process else "HTTP process + writer process"
    print(
        f"accrue serve ({mode}), SQLite synchronous={args.sync}, wrk -t{args.threads}, "
        f"{args.rounds} rounds of {args.duration} s per scenario"
    )
    print(
        f"{'scenario':<20} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>7}"
        f" {'cpu us/req':>10} {'cores':>6} {'writer':>6}"
    )
    for r in results:
        print(
            f"{r.scenario:<20} {r.connections:>5} {r.rps:>9,.0f} {r.p50_ms:>8.2f} {r.p90_ms:>8.2f} "
            f"{r.p99_ms:>8.2f} {r.errors:>7} {r.server_cpu_us:>10.0f} {r.server_cores:>6.2f} {r.writer_cores:>6.2f}"
        )
    summary = []
    all_met = True
    for connections in args.connections:
        healths = [r for r in results if r.connections == connections and r.scenario == "GET /health"]
        writes_ = [r for r in results if r.connections == connections and r.scenario == "POST /transactions"]
        # Each round compares a health run with the write run right after it; the medians decide.
        throughputs = [w.rps / h.rps for h, w in zip(healths, writes_, strict=True)]
        tails = [w.p99_ms / h.p99_ms for h, w in zip(healths, writes_, strict=True)]
        throughput, tail = statistics.median(throughputs), statistics.median(tails)
        write_p99 = statistics.median(w.p99_ms for w in writes_)
        errors = sum(w.errors + w.non2xx for w in writes_)
        met = throughput >= 0.5 and tail <= 2 and (connections != 16 or write_p99 <= 25) and errors == 0
        all_met &= met
        rounds = ", ".join(f"{t:.2f}/{p:.2f}" for t, p in zip(throughputs, tails, strict=True))
        print(
            f"{connections} connections: writes {throughput:.2f} x health req/s, p99 {tail:.2f} x health p99"
            f"{'' if connections != 16 else f', {write_p99:.1f} ms'} (medians; rounds {rounds}): "
            f"{'met' if met else 'MISSED'}"
        )
        summary.append(
            {
                "connections": connections,
                "write_over_health_rps": round(throughput, 3),
                "write_over_health_p99": round(tail, 3),
                "rounds": [[round(t, 3), round(p, 3)] for t, p in zip(throughputs, tails, strict=True)],
            }
        )
    print("background work left after each write run, done in: " + ", ".join(f"{d:.1f} s" for d in drained))
    print(f"ledger after the run: {postings} postings, balances {'equal' if sound else 'DO NOT EQUAL'} their postings")
    print(f"goals: {'met' if all_met and sound else 'MISSED'}")
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}",
                "cpus": os.cpu_count(),
                "sync": args.sync,
                "results": [
                    {
                        **r.__dict__,
                        "rps": round(r.rps, 1),
                        "server_cpu_us": round(r.server_cpu_us, 1),
                        "server_cores": round(r.server_cores, 3),
                        "writer_cores": round(r.writer_cores, 3),
                    }
                    for r in results
                ],
                "ratios": summary,
            }
        )
    )


if __name__ == "__main__":
    main()
