"""Webhooks in and out: events/s, each as a ratio against the least work the same job needs.

    .venv/bin/python bench/webhooks_bench.py                   # 2 000 inbound, 500 outbound
    .venv/bin/python bench/webhooks_bench.py --inbound 500 --outbound 200

Inbound, on one fresh SQLite file (``synchronous=FULL``) and a local blob folder:

- **baseline**: ``CreateOrder`` through the bus, the order (and its points) a webhook leads to;
- **webhook**: the same orders as Stripe ``payment_intent.succeeded`` events, signed as Stripe signs
  them, through ``WebhookReceiver.receive``: signature check, parse, replay check, archive of the raw
  payload (an fsynced file), then the event id and the order in one transaction;
- **replay**: every event delivered again: verified, recognised, nothing written.

Outbound, to a ``ThreadingHTTPServer`` on loopback answering 200:

- **baseline**: one httpx client POSTing the same signed bodies in a loop (connection reused);
- **worker**: ``WebhookDeliveryWorker`` draining the same number of queued deliveries: lease,
  SSRF re-check (address resolution), sign, POST on a fresh connection pinned to the checked address,
  record the attempt.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import stripe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from accrue.adapters.local.http_sender import HttpxWebhookSender  # noqa: E402
from accrue.bootstrap import Application, bootstrap  # noqa: E402
from accrue.config import Settings  # noqa: E402
from accrue.domain.commands import CreateMember, CreateOrder  # noqa: E402
from accrue.domain.events import PointsEarned  # noqa: E402

SECRET = "whsec_bench_stripe_secret_0123456789abcdef"


def app_for(folder: Path, **values: Any) -> Application:
    settings = Settings(
        env="test",
        db=folder / "bench.db",
        blob_dir=folder / "blobs",
        workers_enabled=False,
        stripe_webhook_secrets=[SECRET],
        webhooks_allow_loopback=True,
        **values,
    )
    return bootstrap(settings)


def stripe_body(n: int, user_id: str) -> bytes:
    return json.dumps(
        {
            "id": f"evt_{n:08d}",
            "object": "event",
            "type": "payment_intent.succeeded",
            "data": {
                "object": {
                    "id": f"pi_{n:08d}",
                    "amount": 15_000,
                    "amount_received": 15_000,
                    "currency": "usd",
                    "metadata": {"userId": user_id},
                }
            },
        }
    ).encode()


def inbound(count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as base:
        folder = Path(base)
        (folder / "a").mkdir()
        (folder / "b").mkdir()
        baseline_app = app_for(folder / "a")
        webhook_app = app_for(folder / "b")
        try:
            for application in (baseline_app, webhook_app):
                application.bus.handle(CreateMember(email="bench@example.com", name="Bench", user_id="usr_bench"))

            started = time.perf_counter()
            for n in range(count):
                baseline_app.bus.handle(
                    CreateOrder(user_id="usr_bench", amount=Decimal("150.00"), currency="USD", order_id=f"ord_{n}")
                )
            baseline = time.perf_counter() - started

            bodies = [stripe_body(n, "usr_bench") for n in range(count)]
            now = int(time.time())
            headers = [
                {"stripe-signature": stripe.WebhookSignature.generate_signature_header(b.decode(), SECRET, now)}
                for b in bodies
            ]
            receiver = webhook_app.services["webhook_receiver"]
            started = time.perf_counter()
            for body, header in zip(bodies, headers, strict=True):
                result = receiver.receive("stripe", body, header)
                assert result.status.value == "applied", result
            webhook = time.perf_counter() - started

            started = time.perf_counter()
            for body, header in zip(bodies, headers, strict=True):
                assert receiver.receive("stripe", body, header).status.value == "duplicate"
            replay = time.perf_counter() - started
        finally:
            baseline_app.close()
            webhook_app.close()
    return {
        "events": count,
        "baseline_per_s": count / baseline,
        "webhook_per_s": count / webhook,
        "replay_per_s": count / replay,
        "webhook_vs_baseline": baseline / webhook,
    }


class Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def outbound(count: int) -> dict[str, float]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        with tempfile.TemporaryDirectory() as base:
            application = app_for(Path(base), webhook_retry_schedule_seconds=[0])
            try:
                endpoint = application.services["webhook_endpoints"].create(url, ["points.earned"])
                with application.bus.uow_factory() as uow:
                    for n in range(count):
                        uow.emit(
                            PointsEarned(
                                user_id="usr_bench",
                                transfer_id=f"t{n}",
                                points=15,
                                reason="earn",
                                reference=f"order:{n}",
                                balance=15 * n,
                                lifetime=15 * n,
                            )
                        )
                    uow.commit()
                application.worker.drain()
                with application.bus.uow_factory(readonly=True) as uow:
                    queued = [
                        d.payload for d in uow.webhook_deliveries.list_for_endpoint(endpoint.endpoint_id, 1, None).items
                    ]
                payload = queued[0]

                started = time.perf_counter()
                with httpx.Client(trust_env=False) as client:
                    for n in range(count):
                        headers = HttpxWebhookSender.signed_headers(
                            endpoint.secret, f"evt_{n}", datetime.now(UTC), payload
                        )
                        assert client.post(url, content=payload.encode(), headers=headers).status_code == 200
                baseline = time.perf_counter() - started

                started = time.perf_counter()
                application.services["webhook_delivery"].drain(max_rounds=10_000)
                worker = time.perf_counter() - started
                assert application.database is not None
                done = (
                    application.database.connection()
                    .execute("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'succeeded'")
                    .fetchone()[0]
                )
                assert done == count, done
            finally:
                application.close()
    finally:
        server.shutdown()
        server.server_close()
    return {
        "deliveries": count,
        "baseline_per_s": count / baseline,
        "worker_per_s": count / worker,
        "worker_vs_baseline": baseline / worker,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--inbound", type=int, default=2000)
    parser.add_argument("--outbound", type=int, default=500)
    args = parser.parse_args()
    results = {"inbound": inbound(args.inbound), "outbound": outbound(args.outbound)}
    print(json.dumps({k: {n: round(v, 3) for n, v in r.items()} for k, r in results.items()}, indent=2))


if __name__ == "__main__":
    main()
