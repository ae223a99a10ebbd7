"""The HTTP API on Lambda: API Gateway (REST, proxy integration) -> Mangum -> the FastAPI app.

The same ``create_app`` as ``accrue serve``; only the adapters behind it differ (DynamoDB, S3, SQS).
The module imports almost nothing: FastAPI, the app and the AWS clients load on the first request.
"""

from __future__ import annotations

import functools
from typing import Any

from accrue.entrypoints.lambdas.observability import instrumented


@functools.cache
def adapter() -> Any:
    from mangum import Mangum

    from accrue.entrypoints.api.app import create_app
    from accrue.entrypoints.lambdas import runtime

    # No lifespan: background workers never run inside a request-driven function.
    return Mangum(create_app(runtime.application(), run_background=False), lifespan="off")


@instrumented
def handler(event: dict[str, Any], context: Any) -> Any:
    return adapter()(event, context)
