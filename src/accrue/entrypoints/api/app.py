"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
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
        add_routes(app, module.api)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        csv_uploads={payments.BATCH_UPLOAD_PATH: settings.payment_batch_max_bytes},
    )
    return app


def add_routes(app: FastAPI, router: APIRouter) -> None:
    """Declare ``router``'s routes on the application's own router, as ``include_router`` did
    before FastAPI 0.16x.

    ``include_router`` now keeps each included router behind a branch of the application's router,
    and a request is matched against the routes of every branch before its own twice (once to
    choose the branch, once inside it): a fifth of a write request's CPU here. Routes declared on
    the application are matched once, in order, and get this application as their dependency
    overrides provider, as included ones do. The routers declare no prefix, tags or dependencies
    of their own: their responses and route class are already part of each route.
    """
    for route in router.routes:
        if not isinstance(route, APIRoute):
            raise TypeError(f"{route!r}: only API routes are declared this way")
        app.router.add_api_route(
            route.path,
            route.endpoint,
            response_model=route.response_model,
            status_code=route.status_code,
            tags=list(route.tags),
            dependencies=list(route.dependencies),
            summary=route.summary,
            description=route.description,
            response_description=route.response_description,
            responses=dict(route.responses),
            deprecated=route.deprecated,
            methods=set(route.methods or ()),
            operation_id=route.operation_id,
            response_model_include=route.response_model_include,
            response_model_exclude=route.response_model_exclude,
            response_model_by_alias=route.response_model_by_alias,
            response_model_exclude_unset=route.response_model_exclude_unset,
            response_model_exclude_defaults=route.response_model_exclude_defaults,
            response_model_exclude_none=route.response_model_exclude_none,
            include_in_schema=route.include_in_schema,
            response_class=route.response_class,
            name=route.name,
            route_class_override=type(route),
            callbacks=route.callbacks,
            openapi_extra=route.openapi_extra,
            generate_unique_id_function=route.generate_unique_id_function,
            strict_content_type=route.strict_content_type,
        )
