"""API Gateway Lambda authorizer (TOKEN type): checks the bearer JWT before a request reaches the
API function, so bad tokens cost neither an API invocation nor a database read.

The same rules as the API's own check (HS256 with the shared secret; ``sub``, ``role`` and ``exp``
required; 5 s leeway); the API checks again, so the authorizer is a first gate, not the only one.
Valid: an Allow policy for the whole stage (the result may be cached per token) with ``sub`` and
``role`` in the context. Invalid: "Unauthorized" (API Gateway answers 401).
"""

from __future__ import annotations

import functools
from typing import Any

from accrue.entrypoints.lambdas.observability import instrumented, logger

# The roles of accrue.entrypoints.api.security.Role (a test keeps the two equal; importing that
# module would load FastAPI into this small function).
ROLES = frozenset({"admin", "service", "member"})


class Unauthorized(Exception):
    """API Gateway turns exactly this message into a 401 response."""

    def __init__(self) -> None:
        super().__init__("Unauthorized")


@functools.cache
def secret() -> str:
    from accrue.config import Settings
    from accrue.entrypoints.lambdas import runtime

    settings = Settings()
    if settings.jwt_secret_arn:
        return runtime.fetch_secret(settings, {}, settings.jwt_secret_arn, "ACCRUE_JWT_SECRET_ARN")
    return settings.jwt_secret


def claims_for(token: str, key: str) -> dict[str, Any]:
    import jwt

    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["HS256"], options={"require": ["sub", "role", "exp"]}, leeway=5
    )
    if claims.get("role") not in ROLES:
        raise jwt.InvalidTokenError(f"unknown role {claims.get('role')!r}")
    return claims


def stage_arn(method_arn: str) -> str:
    """arn:aws:execute-api:region:account:api/stage/VERB/path -> arn:...:api/stage/*/*"""
    prefix, _, path = method_arn.partition(":execute-api:")
    parts = path.split("/")
    return f"{prefix}:execute-api:{parts[0]}/{parts[1]}/*/*" if len(parts) >= 2 else method_arn


def authorize(event: dict[str, Any], key: str) -> dict[str, Any]:
    import jwt

    header = str(event.get("authorizationToken") or "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized()
    try:
        claims = claims_for(token.strip(), key)
    except jwt.PyJWTError as exc:
        logger.info("token refused", extra={"reason": str(exc)})
        raise Unauthorized() from None
    return {
        "principalId": str(claims["sub"]),
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": stage_arn(str(event["methodArn"]))}
            ],
        },
        "context": {"sub": str(claims["sub"]), "role": str(claims["role"])},
    }


@instrumented
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return authorize(event, secret())
