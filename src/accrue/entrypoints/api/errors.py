"""Every error becomes the same envelope; domain errors map to HTTP statuses here and only here."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from accrue.domain.errors import Conflict, DomainError, InvalidInput, NotFound, RuleViolation

log = logging.getLogger(__name__)

STATUS_CODES = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "UNPROCESSABLE",
    429: "RATE_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}
# 503 when the writer process stopped while it held the request: the write may or may not have
# been applied (an Idempotency-Key stays locked, so a retry cannot apply it twice at once).
OUTCOME_UNKNOWN = "WRITE_OUTCOME_UNKNOWN"


class ApiError(StarletteHTTPException):
    """An error raised by the HTTP layer itself (auth, rate limit, body limit).

    An HTTPException so that FastAPI passes it through unchanged when it is raised while the body is
    being read (the body limit), instead of turning it into a generic 400.
    """

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, detail=message, headers=headers)
        self.code = code or STATUS_CODES.get(status_code, "ERROR")
        self.message = message
        self.details = details or {}
        self.headers = headers


def error_response(
    status_code: int,
    message: str,
    *,
    code: str | None = None,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        status_code=status_code,
        content={
            "success": False,
            "error": {
                "code": code or STATUS_CODES.get(status_code, "ERROR"),
                "message": message,
                "details": details or {},
            },
        },
        headers=headers,
    )


def domain_status(exc: DomainError) -> int:
    if isinstance(exc, InvalidInput):
        return 400
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, RuleViolation):
        return 422
    return 400


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    name = ""
    for part in parts:
        name += f"[{part}]" if part.isdigit() else (f".{part}" if name else part)
    return name or "body"


def validation_details(exc: RequestValidationError) -> dict[str, Any]:
    errors = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        # pydantic prefixes the message of a ValueError raised by a validator; the rule is the rest.
        rule = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
        field = _field_name(loc)
        if err.get("type") == "missing":
            rule = "is required"
        elif err.get("type") == "json_invalid":
            # The location of a JSON syntax error is a character offset, not a field.
            field = "body"
            rule = f"is not valid JSON ({err.get('ctx', {}).get('error', 'syntax error')})"
        errors.append({"field": field, "rule": rule})
    return {"errors": errors}


def to_response(exc: Exception) -> JSONResponse:
    """Map any exception to the envelope (used by handlers and by the idempotency wrapper)."""
    if isinstance(exc, ApiError):
        return error_response(
            exc.status_code,
            exc.message,
            code=exc.code,
            details=exc.details,
            headers=dict(exc.headers) if exc.headers else None,
        )
    if isinstance(exc, DomainError):
        return error_response(domain_status(exc), exc.message, details=exc.details)
    if isinstance(exc, RequestValidationError):
        details = validation_details(exc)
        first = details["errors"][0] if details["errors"] else {"field": "body", "rule": "is invalid"}
        return error_response(400, f"{first['field']}: {first['rule']}", details=details)
    if isinstance(exc, StarletteHTTPException):
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, str(exc.detail), headers=headers)
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal error")


async def handle_any(request: Request, exc: Exception) -> JSONResponse:
    return to_response(exc)


def install(app: Any) -> None:
    for exc_type in (
        ApiError,
        DomainError,
        RequestValidationError,
        StarletteHTTPException,
        Exception,
    ):
        app.add_exception_handler(exc_type, handle_any)
