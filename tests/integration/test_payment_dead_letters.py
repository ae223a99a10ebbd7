"""Messages that keep failing land in the payment queue's dead-letter queue after 3 receives; an
operator lists them with the other dead letters and, once the cause is fixed, re-drives them."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from accrue.adapters.local.sandbox_gateway import SandboxGateway
from accrue.bootstrap import Application, bootstrap
from accrue.domain import commands
from accrue.domain.payments import CreatePayment, PaymentStatus
from accrue.entrypoints.api.app import create_app
from accrue.ports import ChargeRequest, ChargeResult, PaymentGateway, QueueMessage
from accrue.service_layer import dead_letters
from accrue.service_layer.payments import PaymentComponents
from accrue.service_layer.queue_worker import FollowUp, QueueWorker
from tests.conftest import auth, make_settings, wait_for

VISIBILITY = 0.05


class BrokenGateway(PaymentGateway):
    """An adapter with a bug: every call raises something that is not a payment outcome."""

    def __init__(self, only: str | None = None) -> None:
        self.only = only
        self.keys: list[str] = []
        self.sandbox = SandboxGateway()

    def charge(self, request: ChargeRequest) -> ChargeResult:
        if self.only is None or request.payment_id == self.only:
            self.keys.append(request.idempotency_key)
            raise RuntimeError("gateway client misconfigured")
        return self.sandbox.charge(request)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Application]:
    application = bootstrap(
        make_settings(
            tmp_path,
            workers_enabled=False,
            payment_retry_interval_seconds=0.001,
            payment_queue_visibility_seconds=VISIBILITY,
            payment_lease_seconds=VISIBILITY,
        ),
        payment_gateway=BrokenGateway(),
    )
    yield application
    application.close()


def parts(app: Application) -> PaymentComponents:
    found: PaymentComponents = app.services["payments"]
    return found


def run_until_dead(worker: QueueWorker, expected: int = 1) -> None:
    def dead() -> bool:
        worker.run_once()
        return len(worker.queue.dead_letters()) >= expected

    wait_for(dead, timeout=15, interval=VISIBILITY / 2)


def test_a_handler_that_always_raises_sends_its_message_to_the_dlq_after_3_receives(app: Application) -> None:
    queue = parts(app).queue
    receives: list[int] = []

    def always_raises(message: QueueMessage) -> list[FollowUp]:
        receives.append(message.receive_count)
        raise RuntimeError("handler bug")

    worker = QueueWorker(queue, always_raises, name="test", visibility_timeout_seconds=VISIBILITY)
    (message_id,) = queue.send_batch([{"paymentIds": ["nothing"]}])
    run_until_dead(worker)
    assert receives == [1, 2, 3]
    (dead,) = queue.dead_letters()
    assert (dead.message_id, dead.receive_count, dead.last_error) == (message_id, 3, "RuntimeError: handler bug")

    handled: list[dict[str, Any]] = []
    fixed = QueueWorker(queue, lambda m: handled.append(m.body) or [], name="fixed")
    assert dead_letters.redrive(app, f"queue:{message_id}") is True
    fixed.drain()
    assert handled == [{"paymentIds": ["nothing"]}]
    assert queue.dead_letters() == [] and queue.counts().visible == 0


def test_a_payment_whose_processing_keeps_crashing_is_dead_lettered_then_redriven_once_fixed(
    app: Application,
) -> None:
    app.bus.handle(commands.CreateMember(email="bo@example.com", name="Bo", user_id="bo"))
    app.bus.handle(CreatePayment(payment_id="pay_dlq", amount=Decimal("40.00"), user_id="bo"))
    worker = parts(app).worker
    run_until_dead(worker)
    broken = parts(app).gateway
    assert isinstance(broken, BrokenGateway)
    # Each receive re-ran the same attempt (same idempotency key): the crash is not a payment outcome.
    assert broken.keys == ["pay_dlq:attempt-1"] * 3
    stuck = app.bus.query(lambda uow: uow.payments.get("pay_dlq"))
    assert (stuck.status, stuck.attempts) == (PaymentStatus.PROCESSING, 1)

    client = TestClient(create_app(app))
    listed = client.get("/admin/dead-letters", headers=auth()).json()["data"]["deadLetters"]
    (entry,) = [d for d in listed if d["source"] == "queue"]
    assert entry["name"] == "payments" and entry["handler"] == "payment_workflow" and entry["attempts"] == 3
    assert entry["payload"] == {"paymentIds": ["pay_dlq"]}
    assert entry["lastError"] == "RuntimeError: gateway client misconfigured"

    # The operator fixes the adapter, then re-drives the message.
    parts(app).runner.gateway = SandboxGateway()
    redriven = client.post(f"/admin/dead-letters/{entry['id']}/redrive", headers=auth())
    assert redriven.status_code == 200 and redriven.json()["data"] == {"id": entry["id"], "redriven": True}
    assert client.post(f"/admin/dead-letters/{entry['id']}/redrive", headers=auth()).status_code == 404
    worker.drain(until_idle_seconds=0.2)

    done = app.bus.query(lambda uow: uow.payments.get("pay_dlq"))
    assert (done.status, done.attempts, done.points_earned) == (PaymentStatus.PROCESSED, 1, 4)
    assert app.bus.query(lambda uow: uow.members.get("bo")).balance == 100 + 4
    assert parts(app).queue.dead_letters() == []
    entries = app.bus.query(lambda uow: uow.audit.for_subject("payment", "pay_dlq", 100, None)).items
    assert [e.action for e in entries].count("payment.processed") == 1


def test_one_failing_payment_in_a_message_of_many_is_split_off_and_the_others_go_on(tmp_path: Path) -> None:
    app = bootstrap(
        make_settings(
            tmp_path,
            workers_enabled=False,
            payment_queue_visibility_seconds=VISIBILITY,
            payment_lease_seconds=VISIBILITY,
        ),
        payment_gateway=BrokenGateway(only="row_2"),
    )
    try:
        csv = tmp_path / "three.csv"
        csv.write_text("payment_id,amount,currency\nrow_1,1.00,USD\nrow_2,2.00,USD\nrow_3,3.00,USD\n")
        batch, _ = parts(app).batches.ingest_path(csv, source="cli")
        assert batch.accepted_rows == 3
        queue = parts(app).queue
        assert queue.counts().visible == 1  # the file's rows travel in one message
        run_until_dead(parts(app).worker)
        statuses = {
            pid: app.bus.query(lambda uow, pid=pid: uow.payments.get(pid)).status for pid in ("row_1", "row_2", "row_3")
        }
        assert statuses == {
            "row_1": PaymentStatus.PROCESSED,
            "row_2": PaymentStatus.PROCESSING,
            "row_3": PaymentStatus.PROCESSED,
        }
        (dead,) = queue.dead_letters()
        assert dead.body == {"paymentIds": ["row_2"]} and dead.receive_count == 3
    finally:
        app.close()
