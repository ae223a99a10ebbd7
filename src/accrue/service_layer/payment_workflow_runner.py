"""Runs the payment workflow (``domain/payment_workflow.py``) for one payment, step by step.

The runner interprets the definition: it knows how to perform each *task*, never the order of the
steps, their retries or where an error leads - those come from the definition, which the AWS
deployment renders as a Step Functions state machine.

The workflow's position lives in the payment row (step, attempts of that step, when it may run
again, and a lease while a worker talks to the gateway). A queue message only says "move payment X
on", so a duplicate or late message is harmless: it finds the payment wherever it is and either
continues from there or finds nothing to do.

Transactions: consecutive local steps share one transaction. Before an external call (the gateway)
the attempt is claimed and committed; the call runs outside any transaction; its result is recorded
in the next one. An attempt interrupted by a crash is run again with the same attempt number, so
the gateway sees the same idempotency key and charges at most once.

Errors raised on purpose by tasks (``PaymentWorkflowError``) are matched against the step's Retry
and Catch by name. Anything else - a bug, a broken adapter, a locked database - is not a payment
outcome: it propagates to the queue, which delivers the message again and dead-letters it after
``maxReceiveCount`` receives, so an operator can fix the cause and redrive it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from accrue.domain.audit import SYSTEM_ACTOR
from accrue.domain.errors import ConcurrencyConflict
from accrue.domain.payment_workflow import ANY_ERROR, PAYMENT_WORKFLOW, RetryPolicy, Step, Workflow
from accrue.domain.payments import (
    Payment,
    PaymentFailed,
    PaymentProcessed,
    PaymentStatus,
    PaymentWorkflowError,
    check_processable,
)
from accrue.ports import ChargeRequest, ChargeResult, PaymentGateway, UnitOfWork
from accrue.service_layer.payments import audit

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# A definition that loops forever is a bug; stop a single run after this many steps.
MAX_STEPS_PER_RUN = 50
RACE_RETRY_SECONDS = 0.05


def payment_transfer_id(payment_id: str) -> str:
    """The ledger transfer of a payment's points: posted once, ever, whatever the deliveries."""
    return f"payment:{payment_id}"


@dataclass(frozen=True, slots=True)
class Finished:
    """Nothing more to do for this payment now or ever (the message can be deleted)."""

    status: str | None


@dataclass(frozen=True, slots=True)
class RunLater:
    """The payment waits (a retry interval, or another worker holds it): deliver again then."""

    delay_seconds: float


Outcome = Finished | RunLater


@dataclass(slots=True)
class TaskContext:
    uow: UnitOfWork
    now: datetime
    actor: str = SYSTEM_ACTOR

    def audit(self, payment: Payment, action: str, details: Mapping[str, Any]) -> None:
        audit(self.uow, self.actor, action, "payment", payment.payment_id, self.now, details)


LocalFn = Callable[[Payment, TaskContext], str | None]


@dataclass(frozen=True, slots=True)
class LocalTask:
    """Runs inside the workflow's transaction."""

    run: LocalFn


@dataclass(frozen=True, slots=True)
class ExternalTask:
    """Talks to the outside world: ``call`` runs outside any transaction, ``record`` inside one."""

    call: Callable[[Payment, int], Any]
    record: Callable[[Payment, Any, TaskContext], str | None]
    claim: Callable[[Payment, int, TaskContext], None] | None = None


Task = LocalTask | ExternalTask


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    # The first retry interval; the definition's backoff rate and retry count still apply.
    retry_interval_seconds: float = 2.0
    # How long a worker may hold an attempt at the gateway before another may run it again.
    lease_seconds: float = 30.0
    # The validation step's risk limit in major units of the payment's currency (None: no limit).
    max_amount: Decimal | None = Decimal("1000000")


@dataclass(frozen=True, slots=True)
class _Claimed:
    step: Step
    payment: Payment
    attempt: int


class PaymentWorkflowRunner:
    def __init__(
        self,
        uow_factory: Callable[..., UnitOfWork],
        gateway: PaymentGateway,
        clock: Clock,
        settings: RunnerSettings | None = None,
        workflow: Workflow = PAYMENT_WORKFLOW,
    ) -> None:
        self.uow_factory = uow_factory
        self.gateway = gateway
        self.clock = clock
        self.settings = settings or RunnerSettings()
        self.workflow = workflow
        self.tasks: dict[str, Task] = {
            "validate_payment": LocalTask(self._validate),
            "process_payment": ExternalTask(call=self._charge, record=self._record_charge, claim=self._claim_charge),
            "notify_payment_processed": LocalTask(self._notify_processed),
            "fail_payment": LocalTask(self._fail),
            "notify_payment_failed": LocalTask(self._notify_failed),
        }
        missing = {step.task for step in workflow.steps} - set(self.tasks)
        if missing:
            raise ValueError(f"the workflow names tasks this runner cannot perform: {sorted(missing)}")

    # -- the interpreter ------------------------------------------------------------------------

    def run(self, payment_id: str) -> Outcome:
        """Move the payment as far as it can go now."""
        try:
            outcome: Outcome | _Claimed = self._advance(payment_id, None)
            for _ in range(MAX_STEPS_PER_RUN):
                if not isinstance(outcome, _Claimed):
                    return outcome
                outcome = self._advance(payment_id, self._call(outcome))
        except ConcurrencyConflict:
            # Another delivery moved this payment on at the same moment; look again shortly.
            return RunLater(RACE_RETRY_SECONDS)
        raise RuntimeError(f"payment {payment_id}: the workflow did not settle after {MAX_STEPS_PER_RUN} steps")

    def _call(self, claimed: _Claimed) -> tuple[_Claimed, Any, PaymentWorkflowError | None]:
        task = self.tasks[claimed.step.task]
        assert isinstance(task, ExternalTask)
        try:
            return claimed, task.call(claimed.payment, claimed.attempt), None
        except PaymentWorkflowError as error:
            return claimed, None, error
        except Exception:
            # Not an outcome of the payment: free the attempt at once (same number, same
            # idempotency key) and let the queue deliver the message again.
            self._release(claimed)
            raise

    def _release(self, claimed: _Claimed) -> None:
        with self.uow_factory() as uow:
            payment = uow.payments.get(claimed.payment.payment_id)
            if (
                payment is not None
                and payment.workflow_step == claimed.step.name
                and payment.step_attempts == claimed.attempt
                and payment.lease_until is not None
            ):
                payment.lease_until = self.clock()
                uow.payments.save(payment)
                uow.commit()

    def _advance(
        self, payment_id: str, result: tuple[_Claimed, Any, PaymentWorkflowError | None] | None
    ) -> Outcome | _Claimed:
        with self.uow_factory() as uow:
            payment = uow.payments.get(payment_id)
            if payment is None:
                log.warning("payment %s: message for an unknown payment dropped", payment_id)
                return Finished(None)
            now = self.clock()
            ctx = TaskContext(uow, now)
            changed = False
            if result is not None:
                changed = self._record(payment, result, ctx)
            outcome: Outcome | _Claimed | None = None
            for _ in range(MAX_STEPS_PER_RUN):
                if payment.workflow_step is None:
                    outcome = Finished(str(payment.status))
                    break
                step = self.workflow.step(payment.workflow_step)
                if payment.next_attempt_at is not None and now < payment.next_attempt_at:
                    outcome = RunLater((payment.next_attempt_at - now).total_seconds())
                    break
                task = self.tasks[step.task]
                if isinstance(task, ExternalTask):
                    if payment.lease_until is not None and now < payment.lease_until:
                        outcome = RunLater((payment.lease_until - now).total_seconds())
                        break
                    if payment.lease_until is None:
                        payment.step_attempts += 1  # a new attempt; an expired lease re-runs the old one
                    payment.lease_until = now + timedelta(seconds=self.settings.lease_seconds)
                    payment.next_attempt_at = None
                    if task.claim is not None:
                        task.claim(payment, payment.step_attempts, ctx)
                    payment.updated_at = now
                    uow.payments.save(payment)
                    uow.commit()
                    return _Claimed(step, _snapshot(payment), payment.step_attempts)
                try:
                    value = task.run(payment, ctx)
                except PaymentWorkflowError as error:
                    self._on_error(step, payment, error, ctx)
                else:
                    self._on_success(step, payment, value)
                changed = True
            if outcome is None:
                raise RuntimeError(f"payment {payment_id}: the workflow did not settle after {MAX_STEPS_PER_RUN} steps")
            if changed:
                payment.updated_at = now
                uow.payments.save(payment)
                uow.commit()
            return outcome

    def _record(
        self, payment: Payment, result: tuple[_Claimed, Any, PaymentWorkflowError | None], ctx: TaskContext
    ) -> bool:
        claimed, value, error = result
        if (
            payment.workflow_step != claimed.step.name
            or payment.step_attempts != claimed.attempt
            or payment.lease_until is None
        ):
            # Another delivery recorded this attempt meanwhile (its lease had run out): keep its result.
            return False
        payment.lease_until = None
        if error is not None:
            self._on_error(claimed.step, payment, error, ctx)
        else:
            task = self.tasks[claimed.step.task]
            assert isinstance(task, ExternalTask)
            self._on_success(claimed.step, payment, task.record(payment, value, ctx))
        return True

    def _retry_policy(self, step: Step) -> RetryPolicy | None:
        if step.retry is None:
            return None
        return step.retry.scaled(self.settings.retry_interval_seconds)

    def _on_success(self, step: Step, payment: Payment, value: str | None) -> None:
        target = step.choices.get(value, step.next) if value is not None else step.next
        self._goto(payment, target)

    def _on_error(self, step: Step, payment: Payment, error: PaymentWorkflowError, ctx: TaskContext) -> None:
        name = error.error_name
        policy = self._retry_policy(step)
        retryable = policy is not None and (name in policy.errors or ANY_ERROR in policy.errors)
        if policy is not None and retryable and payment.step_attempts <= policy.max_retries:
            delay = policy.delay_before_retry(payment.step_attempts)
            payment.next_attempt_at = ctx.now + timedelta(seconds=delay)
            payment.last_error = f"{name}: {error}"
            ctx.audit(
                payment,
                "payment.attempt_failed",
                {
                    "step": step.name,
                    "attempt": payment.step_attempts,
                    "error": name,
                    "reason": error.reason,
                    "retryInSeconds": round(delay, 6),
                },
            )
            return
        target = step.catch.get(name) or step.catch.get(ANY_ERROR)
        if target is None:
            raise error
        payment.failure_reason = "retries_exhausted" if retryable else error.reason
        payment.last_error = f"{name}: {error}"
        ctx.audit(
            payment,
            "payment.step_failed",
            {"step": step.name, "attempt": payment.step_attempts, "error": name, "reason": error.reason},
        )
        self._goto(payment, target)

    @staticmethod
    def _goto(payment: Payment, step_name: str | None) -> None:
        payment.workflow_step = step_name
        payment.step_attempts = 0
        payment.next_attempt_at = None
        payment.lease_until = None

    # -- the tasks ------------------------------------------------------------------------------

    def _validate(self, payment: Payment, ctx: TaskContext) -> str | None:
        if payment.status is PaymentStatus.PENDING:
            payment.move_to(PaymentStatus.PROCESSING, ctx.now)
            ctx.audit(payment, "payment.processing", {"from": "pending", "to": "processing"})
        check_processable(payment, self.settings.max_amount)
        return None

    def _claim_charge(self, payment: Payment, attempt: int, ctx: TaskContext) -> None:
        payment.attempts = max(payment.attempts, attempt)

    def _charge(self, payment: Payment, attempt: int) -> ChargeResult:
        return self.gateway.charge(ChargeRequest(payment.payment_id, payment.amount_minor, payment.currency, attempt))

    def _record_charge(self, payment: Payment, result: ChargeResult, ctx: TaskContext) -> str | None:
        payment.gateway_reference = result.reference
        payment.move_to(PaymentStatus.PROCESSED, ctx.now)
        ctx.audit(
            payment,
            "payment.processed",
            {
                "from": "processing",
                "to": "processed",
                "attempts": payment.attempts,
                "gatewayReference": result.reference,
            },
        )
        return None

    def _notify_processed(self, payment: Payment, ctx: TaskContext) -> str | None:
        points = self._award_points(payment, ctx)
        ctx.uow.emit(
            PaymentProcessed(
                payment_id=payment.payment_id,
                amount=payment.amount_text,
                currency=payment.currency,
                amount_minor=payment.amount_minor,
                user_id=payment.user_id,
                attempts=payment.attempts,
                gateway_reference=payment.gateway_reference,
                points_earned=points,
            )
        )
        ctx.audit(payment, "payment.notified", {"event": "PaymentProcessed", "pointsEarned": points})
        return None

    def _award_points(self, payment: Payment, ctx: TaskContext) -> int:
        """Purchase points through the loyalty core, once per payment whatever the deliveries."""
        if payment.user_id is None:
            return 0
        transfer_id = payment_transfer_id(payment.payment_id)
        if ctx.uow.ledger.get(transfer_id) is not None:
            return payment.points_earned
        member = ctx.uow.members.get(payment.user_id)
        if member is None or member.erased:
            ctx.audit(payment, "payment.points_skipped", {"userId": payment.user_id, "reason": "no such member"})
            return 0
        ctx.uow.track(member)
        transfers = member.record_purchase(
            transfer_id=transfer_id,
            amount=payment.amount,
            transaction_type="purchase",
            reference=transfer_id,
            now=ctx.now,
            amount_cents=payment.amount_minor if payment.currency == "USD" else None,
        )
        payment.points_earned = sum(t.amount for t in transfers)
        return payment.points_earned

    def _fail(self, payment: Payment, ctx: TaskContext) -> str | None:
        before = str(payment.status)
        payment.move_to(PaymentStatus.FAILED, ctx.now)
        ctx.audit(
            payment,
            "payment.failed",
            {"from": before, "to": "failed", "reason": payment.failure_reason, "error": payment.last_error},
        )
        return None

    def _notify_failed(self, payment: Payment, ctx: TaskContext) -> str | None:
        ctx.uow.emit(
            PaymentFailed(
                payment_id=payment.payment_id,
                amount=payment.amount_text,
                currency=payment.currency,
                amount_minor=payment.amount_minor,
                user_id=payment.user_id,
                attempts=payment.attempts,
                reason=payment.failure_reason or "",
            )
        )
        ctx.audit(payment, "payment.notified", {"event": "PaymentFailed", "reason": payment.failure_reason})
        return None


def _snapshot(payment: Payment) -> Payment:
    """A copy the external call may read after the transaction closed."""
    return replace(payment)
