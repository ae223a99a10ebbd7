"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from accrue.bootstrap import Application
from accrue.entrypoints.api import errors
from accrue.entrypoints.api.routers import (
    campaigns,
    gdpr,
    loyalty,
    payments,
    payouts,
    preferences,
    referrals,
    system,
    webhooks,
)
from accrue.entrypoints.api.security import TokenBucket
from accrue.entrypoints.api.writer_client import WriterProcess, writer_environment

# Every router module of the API (each exposes ``api``), in the order they appear in the docs.
ROUTERS = (system, loyalty, referrals, payouts, payments, webhooks, preferences, campaigns, gdpr)

DESCRIPTION = """
Loyalty, rewards, referral and payments platform.

Every response is an envelope: `{"success": true, "data": ...}` or
`{"success": false, "error": {"code", "message", "details"}}`.
Authenticate with `Authorization: Bearer <JWT>` (HS256; claims `sub`, `role`, `exp`).
Every POST accepts an `Idempotency-Key` header.
"""


class BodySizeLimit:
    """Refuse bodies over the limit with 413 before the application reads them.

    ``csv_uploads`` gives paths that take a streamed ``text/csv`` file their own, larger limit
    (the route spools the body to disk as it arrives; JSON bodies keep ``max_bytes``).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, csv_uploads: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.csv_uploads = dict(csv_uploads or {})

    def _limit(self, scope: Scope) -> int:
        upload_limit = self.csv_uploads.get(scope.get("path", ""))
        if upload_limit is None or scope.get("method") != "POST":
            return self.max_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-type" and value.split(b";")[0].strip().lower() == b"text/csv":
                return upload_limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = False
                if too_big:
                    await self._refuse(scope, receive, send, limit)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise errors.ApiError(413, f"body larger than {limit} bytes", details={"limitBytes": limit})
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = errors.error_response(413, f"body larger than {limit} bytes", details={"limitBytes": limit})
        await response(scope, receive, send)


def create_app(application: Application, *, run_background: bool = False, writer_process: bool = False) -> FastAPI:
    """The API. ``run_background`` starts the background services with it; ``writer_process``
    (``accrue serve``, SQLite) also starts the writer process and sends the API's writes there."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        writer: WriterProcess | None = None
        if writer_process and application.database is not None:
            writer = WriterProcess(writer_environment(application.settings))
            await writer.start()
            application.writer = writer
            # Commits made here (payments, webhooks in, admin) wake the pipeline over there.
            application.worker.also_wake = writer.wake
        if run_background:
            application.start_background(part="front" if writer is not None else "all")
        try:
            yield
        finally:
            if run_background:
                application.stop_background()
            if writer is not None:
                application.writer = None
                application.worker.also_wake = None
                await writer.stop()

    app = FastAPI(
        title="accrue",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.application = application
    settings = application.settings
    app.state.rate_limiter = (
        TokenBucket(settings.rate_limit_per_second, settings.rate_limit_burst)
        if settings.rate_limit_per_second > 0
        else None
    )
    errors.install(app)
    for module in ROUTERS:
        app.include_router(module.api)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        csv_uploads={payments.BATCH_UPLOAD_PATH: settings.payment_batch_max_bytes},
    )
    return app
