"""The payment workflow run by the queue worker on a real SQLite file: the definition's steps, retries
and catches, the sandbox gateway's outcomes, the audit trail, exactly-once effects."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from accrue.adapters.local.sandbox_gateway import SandboxGateway
from accrue.bootstrap import Application, bootstrap
from accrue.domain import commands
from accrue.domain.events import Event
from accrue.domain.payment_workflow import PAYMENT_WORKFLOW
from accrue.domain.payments import CreatePayment, Payment, PaymentDeclined, PaymentStatus, TransientPaymentError
from accrue.ports import ChargeRequest, ChargeResult, PaymentGateway
from accrue.service_layer.payment_workflow_runner import Finished, RunLater
from accrue.service_layer.payments import PaymentComponents, verify_audit_log
from tests.conftest import make_settings

RETRY_INTERVAL = 0.001


class AlwaysTransient(PaymentGateway):
    def __init__(self) -> None:
        self.attempts: list[int] = []

    def charge(self, request: ChargeRequest) -> ChargeResult:
        self.attempts.append(request.attempt)
        raise TransientPaymentError("gateway_unavailable", "the gateway timed out")


def make_app(tmp_path: Path, gateway: PaymentGateway | None = None, **settings: Any) -> Application:
    values: dict[str, Any] = {"payment_retry_interval_seconds": RETRY_INTERVAL, "workers_enabled": False}
    values.update(settings)
    overrides = {"payment_gateway": gateway} if gateway is not None else {}
    application = bootstrap(make_settings(tmp_path, **values), **overrides)
    # A subscriber of our own (like the webhook and campaign ones): events reach it through the outbox.
    received: list[Event] = []
    for name in ("PaymentProcessed", "PaymentFailed"):
        application.bus.event_handlers.setdefault(name, {})["test_probe"] = lambda event, uow: received.append(event)
    application.services["test_received_events"] = received
    return application


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Application]:
    application = make_app(tmp_path)
    yield application
    application.close()


def parts(app: Application) -> PaymentComponents:
    found: PaymentComponents = app.services["payments"]
    return found


def pay(app: Application, payment_id: str, amount: str, user_id: str | None = None, currency: str = "USD") -> None:
    app.bus.handle(CreatePayment(payment_id=payment_id, amount=Decimal(amount), currency=currency, user_id=user_id))


def settle(app: Application) -> None:
    """Run the worker until the queue is empty, waiting out the (tiny) retry intervals."""
    parts(app).worker.drain(until_idle_seconds=RETRY_INTERVAL * 16 + 0.2)


def payment(app: Application, payment_id: str) -> Payment:
    found: Payment | None = app.bus.query(lambda uow: uow.payments.get(payment_id))
    assert found is not None
    return found


def actions(app: Application, payment_id: str) -> list[str]:
    page = app.bus.query(lambda uow: uow.audit.for_subject("payment", payment_id, 100, None))
    return [e.action for e in page.items]


def events(app: Application, name: str) -> list[dict[str, Any]]:
    """The events of that name delivered (after commit, through the outbox) to our subscriber."""
    app.worker.drain()
    received: list[Event] = app.services["test_received_events"]
    return [e.to_dict() for e in received if e.name == name]


def test_the_runner_interprets_the_shared_definition_and_knows_every_task_it_names(app: Application) -> None:
    runner = parts(app).runner
    assert runner.workflow is PAYMENT_WORKFLOW
    assert {step.task for step in PAYMENT_WORKFLOW.steps} <= set(runner.tasks)


def test_a_payment_is_validated_processed_at_the_first_attempt_and_notified(app: Application) -> None:
    pay(app, "pay_ok", "25.00")
    assert payment(app, "pay_ok").status is PaymentStatus.PENDING
    settle(app)
    done = payment(app, "pay_ok")
    assert (done.status, done.attempts, done.failure_reason, done.workflow_step) == (
        PaymentStatus.PROCESSED,
        1,
        None,
        None,
    )
    assert done.gateway_reference is not None and done.gateway_reference.startswith("sandbox_ch_")
    assert actions(app, "pay_ok") == ["payment.created", "payment.processing", "payment.processed", "payment.notified"]
    (event,) = events(app, "PaymentProcessed")
    assert (event["payment_id"], event["amount"], event["currency"], event["attempts"]) == ("pay_ok", "25.00", "USD", 1)
    assert parts(app).queue.counts().visible == 0


def test_cents_51_are_declined_at_once_and_the_payment_fails_with_card_declined(app: Application) -> None:
    pay(app, "pay_declined", "10.51")
    settle(app)
    failed = payment(app, "pay_declined")
    assert (failed.status, failed.failure_reason, failed.attempts) == (PaymentStatus.FAILED, "card_declined", 1)
    assert actions(app, "pay_declined") == [
        "payment.created",
        "payment.processing",
        "payment.step_failed",
        "payment.failed",
        "payment.notified",
    ]
    (event,) = events(app, "PaymentFailed")
    assert (event["payment_id"], event["reason"]) == ("pay_declined", "card_declined")
    assert events(app, "PaymentProcessed") == []


def test_cents_52_fail_twice_then_succeed_on_the_third_attempt_after_backoff(app: Application) -> None:
    pay(app, "pay_flaky", "10.52")
    runner = parts(app).runner
    first = runner.run("pay_flaky")
    assert isinstance(first, RunLater) and first.delay_seconds == pytest.approx(RETRY_INTERVAL, abs=1e-3)
    settle(app)
    done = payment(app, "pay_flaky")
    assert (done.status, done.attempts) == (PaymentStatus.PROCESSED, 3)
    entries = app.bus.query(lambda uow: uow.audit.for_subject("payment", "pay_flaky", 100, None)).items
    retries = [e.details_dict() for e in entries if e.action == "payment.attempt_failed"]
    # Step Functions semantics, scaled: first interval, then x2 backoff.
    assert [(r["attempt"], r["retryInSeconds"]) for r in retries] == [(1, RETRY_INTERVAL), (2, RETRY_INTERVAL * 2)]
    gateway = parts(app).gateway
    assert isinstance(gateway, SandboxGateway)
    assert sorted(gateway.calls) == ["pay_flaky:attempt-1", "pay_flaky:attempt-2", "pay_flaky:attempt-3"]


def test_a_payment_that_stays_transient_fails_after_the_policys_three_retries(tmp_path: Path) -> None:
    gateway = AlwaysTransient()
    app = make_app(tmp_path, gateway)
    try:
        pay(app, "pay_down", "10.00")
        settle(app)
        failed = payment(app, "pay_down")
        retry = PAYMENT_WORKFLOW.step("ProcessPayment").retry
        assert retry is not None
        assert gateway.attempts == list(range(1, retry.max_retries + 2))  # 1 try + 3 retries
        assert (failed.status, failed.failure_reason, failed.attempts) == (PaymentStatus.FAILED, "retries_exhausted", 4)
        assert failed.last_error == "TransientPaymentError: the gateway timed out"
    finally:
        app.close()


def test_a_payment_over_the_risk_limit_fails_validation_without_calling_the_gateway(tmp_path: Path) -> None:
    app = make_app(tmp_path, payment_max_amount=Decimal("1000"))
    try:
        pay(app, "pay_big", "1000.01")
        settle(app)
        failed = payment(app, "pay_big")
        assert (failed.status, failed.failure_reason, failed.attempts) == (PaymentStatus.FAILED, "amount_over_limit", 0)
        gateway = parts(app).gateway
        assert isinstance(gateway, SandboxGateway) and gateway.calls == {}
    finally:
        app.close()


def test_a_processed_payment_with_a_member_earns_ten_percent_in_points_once_even_if_delivered_twice(
    app: Application,
) -> None:
    app.bus.handle(commands.CreateMember(email="ann@example.com", name="Ann", user_id="ann"))
    start = app.bus.query(lambda uow: uow.members.get("ann")).balance
    pay(app, "pay_ann", "250.00", user_id="ann")
    queue = parts(app).queue
    # The same message delivered twice: once normally, once again by a duplicate send.
    queue.send({"paymentIds": ["pay_ann"]})
    settle(app)
    queue.send({"paymentIds": ["pay_ann"]})
    settle(app)
    parts(app).runner.run("pay_ann")
    member = app.bus.query(lambda uow: uow.members.get("ann"))
    assert member.balance - start == 25
    done = payment(app, "pay_ann")
    assert (done.status, done.points_earned) == (PaymentStatus.PROCESSED, 25)
    transfers = app.bus.query(lambda uow: uow.ledger.history("ann", 100, None)).items
    assert [t.transfer_id for t in transfers if t.reference == "payment:pay_ann"] == ["payment:pay_ann"]
    assert len(events(app, "PaymentProcessed")) == 1
    assert actions(app, "pay_ann").count("payment.processed") == 1
    assert app.bus.query(lambda uow: uow.ledger.check()) == []


def test_an_attempt_interrupted_by_a_crash_is_run_again_under_the_same_number(tmp_path: Path) -> None:
    """The lease and the attempt number are committed before the gateway is called; a worker that
    dies there leaves the attempt open, and whoever runs it next reuses its idempotency key."""

    class DiesOnce(PaymentGateway):
        def __init__(self) -> None:
            self.keys: list[str] = []

        def charge(self, request: ChargeRequest) -> ChargeResult:
            self.keys.append(request.idempotency_key)
            if len(self.keys) == 1:
                raise KeyboardInterrupt  # stands for the process dying mid-call
            return ChargeResult(reference=f"ch_{request.idempotency_key}")

    gateway = DiesOnce()
    app = make_app(tmp_path, gateway, payment_lease_seconds=0.05)
    try:
        pay(app, "pay_crash", "10.00")
        with pytest.raises(KeyboardInterrupt):
            parts(app).runner.run("pay_crash")
        held = payment(app, "pay_crash")
        assert (held.status, held.step_attempts, held.lease_until is not None) == (PaymentStatus.PROCESSING, 1, True)
        # Until the dead worker's lease runs out, nobody else calls the gateway for this payment.
        assert isinstance(parts(app).runner.run("pay_crash"), RunLater)
        time.sleep(0.06)
        assert parts(app).runner.run("pay_crash") == Finished("processed")
        assert gateway.keys == ["pay_crash:attempt-1", "pay_crash:attempt-1"]
        assert payment(app, "pay_crash").attempts == 1
    finally:
        app.close()


def test_a_second_worker_waits_while_the_first_holds_the_attempt(tmp_path: Path) -> None:
    seen: list[object] = []

    class Reentrant(PaymentGateway):
        def charge(self, request: ChargeRequest) -> ChargeResult:
            seen.append(runner.run(request.payment_id))  # another delivery arrives meanwhile
            return ChargeResult(reference="ch_1")

    app = make_app(tmp_path, Reentrant(), payment_lease_seconds=30)
    runner = parts(app).runner
    try:
        pay(app, "pay_busy", "10.00")
        assert runner.run("pay_busy") == Finished("processed")
        assert len(seen) == 1 and isinstance(seen[0], RunLater) and 0 < seen[0].delay_seconds <= 30
        assert payment(app, "pay_busy").attempts == 1
    finally:
        app.close()


def test_a_declined_payment_raises_nothing_to_the_queue(app: Application) -> None:
    """Declines and validation failures are outcomes, not errors: the message is simply done."""
    pay(app, "pay_no", "1.51")
    assert parts(app).runner.run("pay_no") == Finished("failed")
    with pytest.raises(PaymentDeclined):
        SandboxGateway().charge(ChargeRequest("x", 151, "USD", 1))


def test_the_audit_log_of_a_real_run_verifies(app: Application) -> None:
    for n, amount in enumerate(["1.00", "1.51", "1.52", "2.00"]):
        pay(app, f"pay_{n}", amount)
    settle(app)
    result = app.bus.query(verify_audit_log)
    assert result.ok and result.chain.checked >= 4 * 4


def test_a_payment_moved_on_by_another_worker_meanwhile_is_looked_at_again_shortly(
    app: Application, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stores without one writer at a time (DynamoDB) can lose a version race; that is no error."""
    from accrue.adapters.sqlite.payments import SqlitePaymentRepository
    from accrue.domain.errors import ConcurrencyConflict

    pay(app, "pay_race", "10.00")

    def lost_race(self: SqlitePaymentRepository, payment: Payment) -> None:
        raise ConcurrencyConflict(f"payment {payment.payment_id} changed concurrently; retry")

    with monkeypatch.context() as patched:
        patched.setattr(SqlitePaymentRepository, "save", lost_race)
        outcome = parts(app).runner.run("pay_race")
    assert isinstance(outcome, RunLater) and outcome.delay_seconds > 0
    assert payment(app, "pay_race").status is PaymentStatus.PENDING  # nothing half-applied
    assert parts(app).runner.run("pay_race") == Finished("processed")
