"""Shared fixtures: a bootstrapped application on a real SQLite file, an in-process client, and a
real server process on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from accrue.bootstrap import Application, bootstrap
from accrue.config import Settings
from accrue.entrypoints.api.app import create_app
from accrue.entrypoints.api.security import issue_token

SECRET = "test-secret-for-the-suite-only-0123456789abcdef"


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "test",
        "db": tmp_path / "accrue.db",
        "blob_dir": tmp_path / "blobs",
        "inbox_dir": tmp_path / "inbox",
        "jwt_secret": SECRET,
        "rate_limit_per_second": 0,
        "outbox_base_delay_seconds": 0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def app(settings: Settings) -> Iterator[Application]:
    application = bootstrap(settings)
    yield application
    application.close()


def token(role: str, sub: str) -> str:
    return issue_token(SECRET, sub=sub, role=role, ttl_seconds=3600)


def auth(role: str = "admin", sub: str = "admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(role, sub)}"}


@pytest.fixture
def client(app: Application) -> Iterator[TestClient]:
    with TestClient(create_app(app)) as test_client:
        yield test_client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    db: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str]

    def client(self, role: str = "admin", sub: str = "admin", **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=auth(role, sub), timeout=30, **kwargs)  # type: ignore[arg-type]


def server_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCRUE_")}
    env.update(
        {
            "ACCRUE_ENV": "test",
            "ACCRUE_DB": str(tmp_path / "server.db"),
            "ACCRUE_BLOB_DIR": str(tmp_path / "blobs"),
            "ACCRUE_INBOX_DIR": str(tmp_path / "inbox"),
            "ACCRUE_JWT_SECRET": SECRET,
            "ACCRUE_RATE_LIMIT_PER_SECOND": "0",
            "ACCRUE_OUTBOX_POLL_SECONDS": "0.2",
            "ACCRUE_OUTBOX_BASE_DELAY_SECONDS": "0.1",
        }
    )
    env.update(overrides)
    return env


def start_server(tmp_path: Path, **overrides: str) -> LiveServer:
    port = free_port()
    env = server_env(tmp_path, **overrides)
    process = subprocess.Popen(
        [sys.executable, "-m", "accrue.entrypoints.cli", "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return LiveServer(url=url, db=Path(env["ACCRUE_DB"]), process=process, env=env)
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start within 30 s")


def stop_server(server: LiveServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    server = start_server(tmp_path)
    yield server
    stop_server(server)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def factory(**overrides: str) -> LiveServer:
        server = start_server(tmp_path, **overrides)
        started.append(server)
        return server

    yield factory
    for server in started:
        stop_server(server)


def wait_for(predicate: Callable[[], object], timeout: float = 15.0, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
