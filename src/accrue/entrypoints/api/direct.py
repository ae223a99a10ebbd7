"""Calling a route's endpoint without FastAPI's general dependency solver, where it has nothing to do.

FastAPI solves every request's dependencies with one general algorithm: dependency caches keyed
by OAuth scopes, override lookups, generator and thread-pool checks, a response and background
tasks object, then path, query, header and cookie parameters and the body. For a write request
that was the largest part of the HTTP layer (~45 us of ~55 us over ``GET /health``).

Most routes of this API need little of it: a body model, path and query parameters, and
dependencies that are coroutines taking only the ``Request`` (the application, and one
``BearerRoles`` check). For such a route, ``direct_handler`` reads the body exactly as FastAPI
does, awaits each dependency in declaration order, validates the parameters and the body with
FastAPI's own functions (the same errors, the same ``RequestValidationError``), and calls the
endpoint. Any other route, or any request while dependency overrides are set (tests), goes
through FastAPI unchanged. ``tests/integration/test_direct_routes.py`` compares both paths.
"""

from __future__ import annotations

import email.message
import inspect
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import params
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_body_to_args, request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, _effective_route_context_var
from pydantic_core import PydanticUndefined
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[[Request], Coroutine[Any, Any, Response]]

# What FastAPI passes as the body when the request has none.
_UNDEFINED: Any = PydanticUndefined


def direct_handler(route: APIRoute, fallback: Handler) -> Handler:
    """A handler that calls ``route``'s endpoint directly, or ``fallback`` when the route (or a
    request) needs FastAPI's full dependency solving."""
    # An included route is built per inclusion: FastAPI passes that inclusion's view of the route
    # (its dependant, overrides provider, settings) through a context variable while it builds it.
    effective = _effective(route)
    plan = _plan(effective)
    if plan is None:
        return fallback
    dependencies, body_field, endpoint, endpoint_is_coroutine, request_name = plan
    dependant = effective.dependant
    path_fields = dependant.path_params
    query_fields = dependant.query_params
    overrides_provider = effective.dependency_overrides_provider

    async def handler(request: Request) -> Response:
        if overrides_provider is not None and getattr(overrides_provider, "dependency_overrides", None):
            return await fallback(request)
        body = await _read_json_body(request) if body_field is not None else _UNDEFINED
        values: dict[str, Any] = {}
        for name, call in dependencies:
            values[name] = await call(request)
        errors: list[Any] = []
        if path_fields:
            found, wrong = request_params_to_args(path_fields, request.path_params)
            values.update(found)
            errors += wrong
        if query_fields:
            found, wrong = request_params_to_args(query_fields, request.query_params)
            values.update(found)
            errors += wrong
        if body_field is not None:
            found, wrong = await request_body_to_args(
                body_fields=[body_field], received_body=body, embed_body_fields=False
            )
            values.update(found)
            errors += wrong
        if errors:
            raise RequestValidationError(errors, body=None if body is _UNDEFINED else body)
        if request_name is not None:
            values[request_name] = request
        result = await endpoint(**values) if endpoint_is_coroutine else await run_in_threadpool(endpoint, **values)
        if not isinstance(result, Response):
            raise TypeError(f"{route.path}: a directly called endpoint must return a Response")
        return result

    return handler


Plan = tuple[
    list[tuple[str, Callable[[Request], Awaitable[Any]]]],
    Any,
    Callable[..., Any],
    bool,
    str | None,
]


def _effective(route: APIRoute) -> Any:
    context = _effective_route_context_var.get()
    if context is not None and context.original_route is route:
        return context
    return route


def _plan(route: Any) -> Plan | None:
    """What to call, or None when the route uses anything this shortcut does not do itself."""
    dependant = route.dependant
    strict = route.strict_content_type
    if isinstance(strict, DefaultPlaceholder):
        strict = strict.value
    if (
        strict is not True  # a body without a content type is parsed as JSON: FastAPI's job
        or dependant.header_params
        or dependant.cookie_params
        or dependant.websocket_param_name
        or dependant.http_connection_param_name
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
        or len(dependant.body_params) > 1
        or getattr(route, "_embed_body_fields", False)
        or dependant.call is None
    ):
        return None
    body_field = dependant.body_params[0] if dependant.body_params else None
    if body_field is not None and isinstance(body_field.field_info, params.Form | params.File):
        return None
    dependencies: list[tuple[str, Callable[[Request], Awaitable[Any]]]] = []
    for sub in dependant.dependencies:
        call = _request_only_coroutine(sub)
        if call is None or sub.name is None:
            return None
        dependencies.append((sub.name, call))
    endpoint = dependant.call
    if not _returns_response(endpoint):
        return None  # FastAPI validates and encodes what it returns
    return dependencies, body_field, endpoint, inspect.iscoroutinefunction(endpoint), dependant.request_param_name


def _returns_response(endpoint: Callable[..., Any]) -> bool:
    try:
        returns = inspect.signature(endpoint, eval_str=True).return_annotation
    except (NameError, TypeError, ValueError):
        return False
    return isinstance(returns, type) and issubclass(returns, Response)


def _request_only_coroutine(sub: Dependant) -> Callable[[Request], Awaitable[Any]] | None:
    """The dependency's callable if it is a coroutine taking only the request, else None."""
    if (
        sub.dependencies
        or sub.path_params
        or sub.query_params
        or sub.header_params
        or sub.cookie_params
        or sub.body_params
        or sub.websocket_param_name
        or sub.http_connection_param_name
        or sub.response_param_name
        or sub.background_tasks_param_name
        or sub.security_scopes_param_name
        or sub.own_oauth_scopes
        or sub.concurrency is not None
        or sub.request_param_name is None
        or sub.call is None
    ):
        return None
    call = sub.call
    target = call if inspect.isfunction(call) or inspect.ismethod(call) else getattr(call, "__call__", None)  # noqa: B004
    if target is None or not inspect.iscoroutinefunction(target):
        return None
    name = sub.request_param_name

    async def with_request(request: Request) -> Any:
        return await call(**{name: request})

    return with_request


async def _read_json_body(request: Request) -> Any:
    """The body as FastAPI reads it for a JSON body parameter: parsed JSON when the content type
    is JSON, the raw bytes otherwise, nothing when empty; the same errors for bad JSON (a 422
    ``json_invalid``) and for a body that cannot be read or decoded at all (a 400)."""
    try:
        body_bytes = await request.body()
        if not body_bytes:
            return _UNDEFINED
        content_type = request.headers.get("content-type")
        if not content_type or not _is_json(content_type):
            return body_bytes
        return json.loads(body_bytes)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ],
            body=exc.doc,
        ) from exc
    except HTTPException:
        raise  # the body limit (413)
    except Exception as exc:  # e.g. bytes that are not UTF-8: FastAPI answers 400 as well
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from exc


def _is_json(content_type: str) -> bool:
    if content_type.partition(";")[0].strip().lower() == "application/json":
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")
