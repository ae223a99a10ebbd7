"""JWT bearer authentication, role checks and per-subject rate limiting."""

from __future__ import annotations

import enum
import math
import threading
import time
from dataclasses import dataclass
from typing import Annotated

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from accrue.entrypoints.api.errors import ApiError


class Role(enum.StrEnum):
    ADMIN = "admin"
    SERVICE = "service"
    MEMBER = "member"


@dataclass(frozen=True, slots=True)
class Principal:
    sub: str
    role: Role

    def can_see(self, user_id: str) -> bool:
        return self.role is not Role.MEMBER or self.sub == user_id


def issue_token(secret: str, *, sub: str, role: Role | str, ttl_seconds: int = 3600) -> str:
    now = int(time.time())
    payload = {"sub": sub, "role": str(Role(role)), "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(payload, secret, algorithm="HS256")


def decode_token(secret: str, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            options={"require": ["sub", "role", "exp"]},
            leeway=5,
        )
        return Principal(sub=str(claims["sub"]), role=Role(claims["role"]))
    except (jwt.PyJWTError, ValueError) as exc:
        raise ApiError(401, f"invalid bearer token: {exc}", headers={"WWW-Authenticate": "Bearer"}) from None


class TokenBucket:
    """Per-key token buckets: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(burst, 1)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 when allowed; otherwise the seconds to wait before a token is available."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate


_bearer = HTTPBearer(auto_error=False, description="JWT (HS256) with claims sub, role, exp")


def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    application = request.app.state.application
    principal = decode_token(application.settings.jwt_secret, credentials.credentials)
    limiter: TokenBucket | None = request.app.state.rate_limiter
    if limiter is not None:
        wait = limiter.take(principal.sub)
        if wait > 0:
            raise ApiError(
                429,
                "rate limit exceeded",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
                details={"retryAfterSeconds": round(wait, 3)},
            )
    request.state.principal = principal
    return principal


def require(*roles: Role):  # type: ignore[no-untyped-def]
    """A dependency that authenticates and then checks the role."""
    allowed = frozenset(roles)

    def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if principal.role not in allowed:
            raise ApiError(403, f"role '{principal.role}' may not do this")
        return principal

    return check


Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
Writer = Annotated[Principal, Depends(require(Role.ADMIN, Role.SERVICE))]
Reader = Annotated[Principal, Depends(require(Role.ADMIN, Role.SERVICE, Role.MEMBER))]
AdminOrMember = Annotated[Principal, Depends(require(Role.ADMIN, Role.MEMBER))]
