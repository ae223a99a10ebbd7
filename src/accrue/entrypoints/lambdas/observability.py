"""Powertools logger, metrics and tracer: one instance each, shared by every Lambda handler.

Structured JSON logs with the Lambda context, CloudWatch metrics in the embedded metric format
(printed, no API call) and X-Ray traces. The tracer is created on the first invocation, not at
import: building it loads the X-Ray SDK and botocore (~0.3 s here), which would otherwise land in
every cold start's init phase, including the HTTP function's (see docs/PERFORMANCE.md).
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "accrue")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Accrue")

# An invocation that counted nothing is normal (most records need no metric); do not warn about it.
warnings.filterwarnings("ignore", message="No application metrics to publish")

logger = Logger(service=SERVICE)
metrics = Metrics(service=SERVICE, namespace=NAMESPACE)

LambdaHandler = Callable[[dict[str, Any], Any], Any]


@functools.cache
def tracer() -> Any:
    from aws_lambda_powertools import Tracer

    return Tracer(service=SERVICE)


def instrumented(handler: LambdaHandler) -> LambdaHandler:
    """Wrap a Lambda handler with the logger's context, metrics flushing and tracing.

    The wrapping happens on the first call (so the tracer stays out of the import)."""

    @functools.cache
    def wrapped() -> LambdaHandler:
        traced = tracer().capture_lambda_handler(handler, capture_response=False)
        with_metrics = metrics.log_metrics(traced)
        return logger.inject_lambda_context(with_metrics, clear_state=True)

    @functools.wraps(handler)
    def call(event: dict[str, Any], context: Any) -> Any:
        return wrapped()(event, context)

    return call


def count(name: str, value: float = 1) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


__all__ = ["NAMESPACE", "SERVICE", "count", "instrumented", "logger", "metrics", "tracer"]
