"""Typed settings, read from ``ACCRUE_*`` environment variables and validated once at start."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Known only so that it can be refused: a production deployment must bring its own secret.
DEVELOPMENT_JWT_SECRET = "accrue-development-secret-change-me-0123456789"  # noqa: S105


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ACCRUE_", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    backend: Literal["sqlite", "aws"] = "sqlite"

    # -- local store -----------------------------------------------------------------------------
    db: Path = Path("var/accrue.db")
    sqlite_synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"
    blob_dir: Path = Path("var/blobs")
    inbox_dir: Path = Path("var/inbox")

    # -- HTTP -----------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    jwt_secret: str = DEVELOPMENT_JWT_SECRET
    jwt_ttl_seconds: int = Field(default=3600, gt=0)
    rate_limit_per_second: float = Field(default=50, ge=0)
    rate_limit_burst: int = Field(default=100, ge=0)
    idempotency_ttl_seconds: int = Field(default=86_400, ge=86_400)

    # -- loyalty --------------------------------------------------------------------------------
    welcome_bonus_points: int = Field(default=100, ge=0)

    # -- referrals and payouts ---------------------------------------------------------------------
    # More than this many signups for one referrer within the window are held for review (0: off).
    referral_velocity_max_signups: int = Field(default=50, ge=0)
    referral_velocity_window_seconds: int = Field(default=86_400, gt=0)
    # Rewards claimed or marked paid per transaction by a payout run.
    payout_chunk_size: int = Field(default=5000, ge=1, le=100_000)

    # -- workers --------------------------------------------------------------------------------
    workers_enabled: bool = True
    scheduler_enabled: bool = True
    outbox_max_attempts: int = Field(default=5, ge=1)
    outbox_base_delay_seconds: float = Field(default=1.0, ge=0)
    outbox_poll_seconds: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def refuse_unsafe_production_values(self) -> Settings:
        if self.env == "production":
            if self.jwt_secret == DEVELOPMENT_JWT_SECRET:
                raise ValueError(
                    "ACCRUE_JWT_SECRET: the built-in development secret is refused when ACCRUE_ENV=production"
                )
            if len(self.jwt_secret) < 32:
                raise ValueError("ACCRUE_JWT_SECRET: must be at least 32 characters in production")
        return self
