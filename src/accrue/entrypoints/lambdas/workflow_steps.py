"""The payment workflow's steps as Step Functions tasks.

The state machine is rendered from ``accrue.domain.payment_workflow`` (infra/.../workflow_asl.py);
each Task state invokes this function with ``{"task": <task name>, "input": <state>}`` and the
state is ``{"paymentId": ...}`` (plus ``error`` after a Catch). The function runs that one task of
the payments runner (the same task functions the local worker interprets) and returns the new state
``{"paymentId", "status", "result"}``. Step Functions owns the order, the retries and the catches
here: a task's PaymentWorkflowError is re-raised under its own name (``PaymentDeclined`` ...), which
is what the Retry and Catch blocks match.

The payment's workflow cursor is kept in step with the machine (the step it is at, its attempts),
and the gateway call follows the runner's rule: the attempt is claimed and committed first, the
call runs outside any transaction, its result is recorded in the next one; a retried invocation
after a crash re-runs the same attempt number, so the gateway sees the same idempotency key.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from accrue.entrypoints.lambdas.observability import count, instrumented, logger


class UnknownTask(ValueError):
    pass


class PaymentNotFound(LookupError):
    pass


def _cause_reason(state: dict[str, Any]) -> tuple[str | None, str | None]:
    """(error name, message) of the error a Catch put into the state, if any."""
    import json

    error = state.get("error")
    if not isinstance(error, dict):
        return None, None
    cause = error.get("Cause")
    message = None
    if isinstance(cause, str):
        try:
            message = json.loads(cause).get("errorMessage")
        except (ValueError, AttributeError):
            message = cause
    return error.get("Error"), message


def run_task(app: Any, task_name: str, state: dict[str, Any]) -> dict[str, Any]:
    from accrue.domain.payments import PaymentWorkflowError
    from accrue.service_layer.payment_workflow_runner import ExternalTask, TaskContext

    runner = app.services["payments"].runner
    steps = [s for s in runner.workflow.steps if s.task == task_name]
    if not steps or task_name not in runner.tasks:
        raise UnknownTask(f"no workflow task named {task_name!r}")
    step = steps[0]
    task = runner.tasks[task_name]
    payment_id = str(state.get("paymentId") or "")
    if not payment_id:
        raise ValueError("the state has no paymentId")
    uow_factory = app.bus.uow_factory

    def load(uow: Any) -> Any:
        payment = uow.payments.get(payment_id)
        if payment is None:
            raise PaymentNotFound(f"payment {payment_id} not found")
        return payment

    def record_error(error: PaymentWorkflowError) -> None:
        policy = step.retry
        retryable = policy is not None and error.error_name in policy.errors
        with uow_factory() as uow:
            payment = load(uow)
            now = app.clock()
            payment.lease_until = None
            payment.last_error = f"{error.error_name}: {error}"
            # Step Functions retries a retryable error; the last one ends in a Catch: the reason the
            # failure step records is then "retries_exhausted", as with the local worker.
            payment.failure_reason = "retries_exhausted" if retryable else error.reason
            payment.updated_at = now
            TaskContext(uow, now).audit(
                payment,
                "payment.attempt_failed",
                {
                    "step": step.name,
                    "attempt": payment.step_attempts,
                    "error": error.error_name,
                    "reason": error.reason,
                },
            )
            uow.payments.save(payment)
            uow.commit()

    def advance(payment: Any, value: str | None) -> None:
        payment.workflow_step = step.choices.get(value, step.next) if value is not None else step.next
        payment.step_attempts = 0
        payment.next_attempt_at = None
        payment.lease_until = None

    if isinstance(task, ExternalTask):
        with uow_factory() as uow:
            payment = load(uow)
            now = app.clock()
            if payment.lease_until is None:
                payment.step_attempts += 1  # a new attempt; a lease left by a crash re-runs the old one
            payment.workflow_step = step.name
            payment.lease_until = now + timedelta(seconds=runner.settings.lease_seconds)
            if task.claim is not None:
                task.claim(payment, payment.step_attempts, TaskContext(uow, now))
            payment.updated_at = now
            uow.payments.save(payment)
            uow.commit()
            attempt, snapshot = payment.step_attempts, replace(payment)
        try:
            result = task.call(snapshot, attempt)
        except PaymentWorkflowError as error:
            record_error(error)
            raise
        with uow_factory() as uow:
            payment = load(uow)
            now = app.clock()
            value = task.record(payment, result, TaskContext(uow, now))
            payment.failure_reason, payment.last_error = None, None
            advance(payment, value)
            payment.updated_at = now
            uow.payments.save(payment)
            uow.commit()
    else:
        error_name, message = _cause_reason(state)
        with uow_factory() as uow:
            payment = load(uow)
            now = app.clock()
            if error_name and payment.last_error is None:
                payment.last_error = f"{error_name}: {message}"
            payment.workflow_step = step.name
            try:
                value = task.run(payment, TaskContext(uow, now))
            except PaymentWorkflowError as error:
                uow.rollback()
                record_error(error)
                raise
            advance(payment, value)
            payment.updated_at = now
            uow.payments.save(payment)
            uow.commit()
    count(f"WorkflowTask.{task_name}")
    logger.info("workflow task done", extra={"task": task_name, "paymentId": payment_id, "status": str(payment.status)})
    return {"paymentId": payment_id, "status": str(payment.status), "result": value}


@instrumented
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from accrue.entrypoints.lambdas import runtime

    task = event.get("task")
    state = event.get("input")
    if not isinstance(task, str) or not isinstance(state, dict):
        raise ValueError('the payload must be {"task": <name>, "input": {...}}')
    return run_task(runtime.application(), task, state)
