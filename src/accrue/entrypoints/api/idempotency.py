"""``Idempotency-Key`` on every POST, with Stripe's semantics, as a route class.

Same key and same body: the first response is replayed and nothing is applied again. Same key with
another body: 422 IDEMPOTENCY_MISMATCH. A request while the first one with that key is still
running: 409. Keys are scoped to the token subject and kept at least 24 hours.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from accrue.entrypoints.api.direct import direct_handler
from accrue.entrypoints.api.errors import OUTCOME_UNKNOWN, ApiError, error_response, to_response
from accrue.entrypoints.api.security import decode_token
from accrue.entrypoints.api.writes import BeginKey, CompleteKey, ReleaseKey, run_op
from accrue.ports import InProgress, Mismatch, Replay

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


class IdempotentRoute(APIRoute):
    """Every route of the API: unknown query parameters refused, then idempotency keys on POSTs."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = direct_handler(self, super().get_route_handler())
        # A misspelt filter (``?user_id=`` for ``?userId=``) must not silently widen a listing.
        known_query = _query_parameter_names(self.dependant)

        async def handler(request: Request) -> Response:
            unknown = sorted(set(request.query_params) - known_query) if request.scope["query_string"] else None
            if unknown:
                return error_response(
                    400,
                    f"{unknown[0]}: is not a query parameter of this operation",
                    details={"field": unknown[0], "rule": "unknown query parameter", "known": sorted(known_query)},
                )
            key = request.headers.get(HEADER)
            if request.method != "POST" or key is None:
                return await original(request)
            if not key or len(key) > MAX_KEY_LENGTH:
                return error_response(
                    400,
                    f"{HEADER}: must be 1 to {MAX_KEY_LENGTH} characters",
                    details={"field": HEADER, "rule": f"1 to {MAX_KEY_LENGTH} characters"},
                )
            application = request.app.state.application
            scope = _scope(request, application.settings.jwt_secret)
            if scope is None:
                # Unauthenticated: let the route's own auth answer 401 without touching the store.
                return await original(request)
            body = await request.body()
            digest = hashlib.sha256(
                request.method.encode() + b" " + request.url.path.encode() + b"\n" + body
            ).hexdigest()
            outcome = await run_op(application, BeginKey(scope, key, digest))
            if isinstance(outcome, Replay):
                return Response(
                    content=outcome.body,
                    status_code=outcome.status_code,
                    media_type="application/json",
                    headers={"Idempotent-Replayed": "true"},
                )
            if isinstance(outcome, Mismatch):
                return error_response(
                    422,
                    f"{HEADER} was already used with a different request",
                    code="IDEMPOTENCY_MISMATCH",
                    details={"field": HEADER},
                )
            if isinstance(outcome, InProgress):
                return error_response(
                    409,
                    f"a request with this {HEADER} is still in progress",
                    details={"field": HEADER},
                )
            outcome_unknown = False
            try:
                response = await original(request)
            except Exception as exc:  # noqa: BLE001 - mapped to the envelope so the outcome can be stored
                response = to_response(exc)
                outcome_unknown = isinstance(exc, ApiError) and exc.code == OUTCOME_UNKNOWN
            if outcome_unknown:
                # It may have been applied: the key stays locked until its lock expires.
                return response
            if response.status_code >= 500 or response.status_code == 429:
                # Nothing was applied: let the client retry with the same key.
                try:
                    await run_op(application, ReleaseKey(scope, key))
                except ApiError:
                    log.warning("Idempotency-Key not released (the writer is down); it unlocks on its own")
                return response
            content = bytes(response.body)
            await run_op(application, CompleteKey(scope, key, response.status_code, content))
            return response

        return handler


def _query_parameter_names(dependant: Dependant) -> frozenset[str]:
    """Every query parameter the route and its dependencies declare (by their wire names)."""
    names: set[str] = set()
    pending = [dependant]
    while pending:
        current = pending.pop()
        names.update(field.alias for field in current.query_params)
        pending.extend(current.dependencies)
    return frozenset(names)


def _scope(request: Request, secret: str) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        principal = decode_token(secret, token)
    except Exception:  # noqa: BLE001 - a bad token is the route's to refuse with 401
        return None
    return f"{principal.role}:{principal.sub}"
