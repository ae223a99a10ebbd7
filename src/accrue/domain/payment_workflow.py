"""The payment workflow, defined once as data.

The local worker interprets it step by step; the AWS deployment renders it as a Step Functions
state machine (Task/Choice states, Retry and Catch blocks) from the same definition. Seed 004's
machine, done right: validation can pass, only transient processing errors are retried, and every
path ends in a recorded state with a notification.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Step Functions semantics: ``max_retries`` retries after the first attempt."""

    errors: tuple[str, ...]
    interval_seconds: float = 2.0
    backoff_rate: float = 2.0
    max_retries: int = 3

    def delay_before_retry(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based): 2, 4, 8 ..."""
        return self.interval_seconds * self.backoff_rate ** (retry_number - 1)

    def scaled(self, interval_seconds: float) -> RetryPolicy:
        """The same policy with another first interval (tests run with milliseconds)."""
        return RetryPolicy(self.errors, interval_seconds, self.backoff_rate, self.max_retries)


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    # The task a worker (local) or a Lambda function (AWS) runs for this step.
    task: str
    next: str | None = None
    retry: RetryPolicy | None = None
    # Error name -> step to go to when the task raises it (after retries are exhausted).
    catch: dict[str, str] = field(default_factory=dict)
    # For a choice on the task's result: result value -> next step; anything else -> ``next``.
    choices: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Workflow:
    name: str
    start: str
    steps: tuple[Step, ...]

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)


# Error names raised by the payment tasks (also the Step Functions ErrorEquals names).
VALIDATION_FAILED = "PaymentValidationFailed"
TRANSIENT_ERROR = "TransientPaymentError"
DECLINED = "PaymentDeclined"
ANY_ERROR = "States.ALL"

PAYMENT_WORKFLOW = Workflow(
    name="payment",
    start="ValidatePayment",
    steps=(
        Step(
            name="ValidatePayment",
            task="validate_payment",
            next="ProcessPayment",
            catch={VALIDATION_FAILED: "MarkFailed", ANY_ERROR: "MarkFailed"},
        ),
        Step(
            name="ProcessPayment",
            task="process_payment",
            next="NotifySuccess",
            retry=RetryPolicy(errors=(TRANSIENT_ERROR,), interval_seconds=2.0, backoff_rate=2.0, max_retries=3),
            catch={DECLINED: "MarkFailed", TRANSIENT_ERROR: "MarkFailed", ANY_ERROR: "MarkFailed"},
        ),
        Step(name="NotifySuccess", task="notify_payment_processed"),
        Step(name="MarkFailed", task="fail_payment", next="NotifyFailure"),
        Step(name="NotifyFailure", task="notify_payment_failed"),
    ),
)
