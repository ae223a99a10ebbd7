"""Settings refuse unsafe production values; tokens are checked strictly; rate buckets refill."""

from __future__ import annotations

import time

import jwt
import pytest
from pydantic import ValidationError

from accrue.config import DEVELOPMENT_JWT_SECRET, Settings
from accrue.entrypoints.api.errors import ApiError
from accrue.entrypoints.api.security import Principal, Role, TokenBucket, decode_token, issue_token

SECRET = "a-secret-that-is-long-enough-for-production-0123"


def test_production_refuses_the_built_in_development_secret() -> None:
    with pytest.raises(ValidationError, match="development secret is refused"):
        Settings(env="production")


def test_production_refuses_a_short_secret() -> None:
    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings(env="production", jwt_secret="short")


def test_production_accepts_its_own_long_secret_and_development_keeps_the_default() -> None:
    assert Settings(env="production", jwt_secret=SECRET).jwt_secret == SECRET
    assert Settings(env="development").jwt_secret == DEVELOPMENT_JWT_SECRET


def test_settings_come_from_accrue_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCRUE_RATE_LIMIT_PER_SECOND", "0")
    monkeypatch.setenv("ACCRUE_SQLITE_SYNCHRONOUS", "NORMAL")
    monkeypatch.setenv("ACCRUE_WELCOME_BONUS_POINTS", "0")
    settings = Settings()
    assert settings.rate_limit_per_second == 0
    assert settings.sqlite_synchronous == "NORMAL"
    assert settings.welcome_bonus_points == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("sqlite_synchronous", "OFF"),
        ("idempotency_ttl_seconds", 3600),
        ("welcome_bonus_points", -1),
        ("max_body_bytes", 0),
    ],
)
def test_unsafe_or_meaningless_settings_fail_fast(name: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Settings(**{name: value})  # type: ignore[arg-type]


def test_an_issued_token_round_trips_to_its_principal() -> None:
    token = issue_token(SECRET, sub="user-1", role="member")
    assert decode_token(SECRET, token) == Principal(sub="user-1", role=Role.MEMBER)


def now() -> int:
    return int(time.time())


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (jwt.encode({"sub": "a", "role": "admin", "exp": now() + 60}, "other-secret-0123456789abcdef"), "signature"),
        (jwt.encode({"sub": "a", "role": "admin", "exp": now() - 60}, SECRET), "expired"),
        (jwt.encode({"sub": "a", "role": "admin"}, SECRET), "exp"),
        (jwt.encode({"role": "admin", "exp": now() + 60}, SECRET), "sub"),
        (jwt.encode({"sub": "a", "exp": now() + 60}, SECRET), "role"),
        (jwt.encode({"sub": "a", "role": "root", "exp": now() + 60}, SECRET), "root"),
        (jwt.encode({"sub": "a", "role": "admin", "exp": now() + 60}, SECRET, algorithm="HS512"), "algorithm"),
        ("not.a.token", "segments"),
    ],
    ids=["wrong-secret", "expired", "no-exp", "no-sub", "no-role", "unknown-role", "other-algorithm", "garbage"],
)
def test_a_token_that_is_not_ours_or_not_valid_now_is_a_401(token: str, why: str) -> None:
    with pytest.raises(ApiError) as raised:
        decode_token(SECRET, token)
    assert raised.value.status_code == 401
    assert raised.value.headers == {"WWW-Authenticate": "Bearer"}


def test_an_unsigned_token_is_refused() -> None:
    unsigned = jwt.encode({"sub": "a", "role": "admin", "exp": now() + 60}, key="", algorithm="none")
    with pytest.raises(ApiError):
        decode_token(SECRET, unsigned)


def test_a_token_bucket_allows_the_burst_then_one_request_per_refill(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("accrue.entrypoints.api.security.time.monotonic", lambda: clock[0])
    bucket = TokenBucket(rate=2, burst=3)
    assert [bucket.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take("a") == pytest.approx(0.5)
    assert bucket.take("b") == 0.0  # per key
    clock[0] += 0.5
    assert bucket.take("a") == 0.0
    assert bucket.take("a") > 0
    clock[0] += 60  # never more than the burst saved up
    assert [bucket.take("a") for _ in range(4)][-1] > 0


def test_a_remembered_token_is_still_refused_once_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    token = issue_token(SECRET, sub="user-2", role="service", ttl_seconds=60)
    assert decode_token(SECRET, token).sub == "user-2"  # verified and remembered
    later = time.time() + 120
    monkeypatch.setattr("accrue.entrypoints.api.security.time.time", lambda: later)
    with pytest.raises(ApiError) as raised:
        decode_token(SECRET, token)
    assert raised.value.status_code == 401
    assert "expired" in raised.value.message
