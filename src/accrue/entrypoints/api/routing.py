"""Shared router settings: the idempotent route class and the documented error responses."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from accrue.bootstrap import Application
from accrue.entrypoints.api.idempotency import IdempotentRoute
from accrue.entrypoints.api.schemas import ErrorEnvelope
from accrue.entrypoints.api.writes import run_write

__all__ = ["ERROR_RESPONSES", "application", "router", "run_write"]

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": text}
    for status, text in {
        400: "Invalid input: the error names the field and the rule",
        401: "Missing or invalid bearer token",
        403: "The token's role may not do this",
        404: "Not found (or not yours)",
        409: "Conflicts with the current state, or the same Idempotency-Key is in flight",
        413: "Body larger than the limit",
        422: "A business rule refuses it, or the Idempotency-Key was used with another body",
        429: "Rate limit exceeded (see Retry-After)",
        500: "Internal error",
        503: "The writer process is restarting (see Retry-After); code WRITE_OUTCOME_UNKNOWN: it stopped while "
        "holding this write, which may or may not be applied",
    }.items()
}


def router(**kwargs: Any) -> APIRouter:
    return APIRouter(route_class=IdempotentRoute, responses=ERROR_RESPONSES, **kwargs)


async def application(request: Request) -> Application:
    """The application (a coroutine: a plain ``def`` dependency would cost a thread hop)."""
    app: Application = request.app.state.application
    return app
