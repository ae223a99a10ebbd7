"""A deterministic payment gateway for local runs and tests, like a card network's test mode.

The cents of the amount pick the outcome (whatever the currency):
- ``.51``: declined permanently with ``card_declined``;
- ``.52``: a transient failure on attempts 1 and 2, success from attempt 3;
- anything else: success.
The same idempotency key always gets the same answer, as at a real gateway.
"""

from __future__ import annotations

import hashlib
import threading

from accrue.domain.payments import PaymentDeclined, TransientPaymentError
from accrue.ports import ChargeRequest, ChargeResult, PaymentGateway

DECLINE_CENTS = 51
FLAKY_CENTS = 52
FLAKY_FAILURES = 2


class SandboxGateway(PaymentGateway):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # How many charge calls each idempotency key received (tests and demos read it).
        self.calls: dict[str, int] = {}

    def charge(self, request: ChargeRequest) -> ChargeResult:
        with self._lock:
            self.calls[request.idempotency_key] = self.calls.get(request.idempotency_key, 0) + 1
        cents = request.amount_minor % 100
        if cents == DECLINE_CENTS:
            raise PaymentDeclined("card_declined", "the card was declined (sandbox: amount ends in .51)")
        if cents == FLAKY_CENTS and request.attempt <= FLAKY_FAILURES:
            raise TransientPaymentError(
                "gateway_unavailable",
                f"the gateway timed out (sandbox: amount ends in .52, attempt {request.attempt})",
            )
        digest = hashlib.sha256(request.idempotency_key.encode()).hexdigest()[:24]
        return ChargeResult(reference=f"sandbox_ch_{digest}")
