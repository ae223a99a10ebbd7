"""Typed settings, read from ``ACCRUE_*`` environment variables and validated once at start."""

from __future__ import annotations

import base64
import binascii
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Known only so that it can be refused: a production deployment must bring its own secret.
DEVELOPMENT_JWT_SECRET = "accrue-development-secret-change-me-0123456789"  # noqa: S105
# The webhook secret the development docs use; refused, like the JWT one, in production.
DEVELOPMENT_WEBHOOK_SECRET = "whsec_YWNjcnVlLWRldmVsb3BtZW50LXdlYmhvb2sta2V5"  # noqa: S105
WEBHOOK_SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
BUILT_IN_WEBHOOK_PROVIDERS = frozenset({"stripe", "shopify"})
MIN_PRODUCTION_WEBHOOK_SECRET_LENGTH = 24
# A bare address (what SES verifies as an identity): no display name, one @, a dotted domain.
SES_FROM_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@(?=.{1,253}$)[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
# SES configuration set names: letters, digits, underscores and dashes, at most 64 characters.
SES_CONFIGURATION_SET = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


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
    # `accrue serve` runs the API's writes and the event pipeline (outbox, notification sends,
    # webhook deliveries) in a second process, beside the HTTP process (entrypoints/writer.py);
    # false: everything in one process.
    writer_process: bool = True
    workers_enabled: bool = True
    scheduler_enabled: bool = True
    outbox_max_attempts: int = Field(default=5, ge=1)
    outbox_base_delay_seconds: float = Field(default=1.0, ge=0)
    outbox_poll_seconds: float = Field(default=1.0, gt=0)
    # A busy outbox worker or notification dispatcher pauses this long between rounds, so that work
    # arriving under load is handled in batches (see PollingWorker); 0 turns it off.
    worker_linger_seconds: float = Field(default=0.05, ge=0, le=5)

    # -- payments --------------------------------------------------------------------------------
    payment_workers: int = Field(default=2, ge=0, le=32)
    payment_poll_seconds: float = Field(default=0.5, gt=0)
    payment_queue_visibility_seconds: float = Field(default=60.0, gt=0)
    payment_queue_max_receive_count: int = Field(default=3, ge=1)
    payment_queue_retention_seconds: int = Field(default=14 * 86_400, ge=60)
    # The workflow's first retry interval (its backoff rate and retry count still apply); tests shrink it.
    payment_retry_interval_seconds: float = Field(default=2.0, ge=0)
    payment_lease_seconds: float = Field(default=30.0, gt=0)
    # The validation step's risk limit per payment, in major units of its currency.
    payment_max_amount: Decimal | None = Field(default=Decimal("1000000"), gt=0)
    # Batch uploads stream to disk; this is their own limit (JSON bodies keep max_body_bytes).
    payment_batch_max_bytes: int = Field(default=2 * 1024**3, gt=0)
    # Rows per transaction: larger is faster for big files, smaller holds the writer lock for less.
    payment_batch_chunk_rows: int = Field(default=20_000, ge=1, le=100_000)
    spool_dir: Path = Path("var/spool")
    inbox_poll_seconds: float = Field(default=2.0, gt=0)

    # -- webhooks in (a provider without secrets is disabled) ------------------------------------
    # Comma-separated: every listed secret is accepted, so a secret can be rotated without downtime.
    stripe_webhook_secrets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    shopify_webhook_secrets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # JSON {"source": "whsec_..." | ["whsec_...", ...]}: each source is served at /webhooks/{source}.
    standard_webhook_secrets: dict[str, list[str]] = Field(default_factory=dict)
    webhook_tolerance_seconds: int = Field(default=300, ge=1, le=3600)

    # -- webhooks out ----------------------------------------------------------------------------
    # Delay before each attempt (Standard Webhooks schedule: now, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h).
    webhook_retry_schedule_seconds: list[float] = Field(
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0], min_length=1
    )
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    webhook_poll_seconds: float = Field(default=1.0, gt=0)
    # Development only: lets subscriber URLs point at this machine (refused in production).
    webhooks_allow_loopback: bool = False

    # -- notification channels (email goes to the local outbox until an SMTP host is set) --------
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = "accrue <no-reply@localhost>"
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    notification_max_attempts: int = Field(default=5, ge=1)
    notification_retry_base_seconds: float = Field(default=5.0, ge=0)
    notification_poll_seconds: float = Field(default=1.0, gt=0)

    # -- AWS (ACCRUE_BACKEND=aws; names come from the CDK stack's environment) --------------------
    table_name: str | None = None
    payments_queue_url: str | None = None
    notifications_queue_url: str | None = None
    reports_bucket: str | None = None
    uploads_bucket: str | None = None
    archive_bucket: str | None = None
    notifications_topic_arn: str | None = None
    event_bus_name: str | None = None
    payment_state_machine_arn: str | None = None
    # The JWT signing secret lives in Secrets Manager; the Lambda handlers read it at cold start.
    jwt_secret_arn: str | None = None
    # The inbound webhook providers' secrets, a JSON document in Secrets Manager read at cold start
    # (``with_webhook_secrets``): {"stripe": [...], "shopify": [...], "standard": {"<source>": [...]}}.
    webhook_secrets_arn: str | None = None
    # E-mail through Amazon SES (API v2) from this verified address; SMS and push stay on the topic.
    # Unset: every channel, e-mail included, is published to the notifications topic.
    ses_from_address: str | None = None
    # An SES configuration set for every e-mail (event destinations: deliveries, bounces, complaints).
    ses_configuration_set: str | None = None
    # Another endpoint for every AWS client (LocalStack, a VPC endpoint); unset in Lambda.
    aws_endpoint_url: str | None = None

    @model_validator(mode="after")
    def require_aws_names(self) -> Settings:
        if self.backend == "aws":
            for name in ("table_name", "reports_bucket"):
                if not getattr(self, name):
                    raise ValueError(f"ACCRUE_{name.upper()}: required when ACCRUE_BACKEND=aws")
        return self

    @model_validator(mode="after")
    def refuse_unsafe_production_values(self) -> Settings:
        # With ACCRUE_JWT_SECRET_ARN the secret is fetched (and checked again) at cold start.
        if self.env == "production" and not self.jwt_secret_arn:
            if self.jwt_secret == DEVELOPMENT_JWT_SECRET:
                raise ValueError(
                    "ACCRUE_JWT_SECRET: the built-in development secret is refused when ACCRUE_ENV=production"
                )
            if len(self.jwt_secret) < 32:
                raise ValueError("ACCRUE_JWT_SECRET: must be at least 32 characters in production")
        return self

    @field_validator("ses_from_address", "ses_configuration_set", mode="before")
    @classmethod
    def blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("ses_from_address")
    @classmethod
    def check_ses_from_address(cls, value: str | None) -> str | None:
        if value is not None and not SES_FROM_ADDRESS.match(value):
            raise ValueError(
                "ACCRUE_SES_FROM_ADDRESS: must be one e-mail address, local@domain.tld, "
                "without a display name, spaces or angle brackets"
            )
        return value

    @field_validator("ses_configuration_set")
    @classmethod
    def check_ses_configuration_set(cls, value: str | None) -> str | None:
        if value is not None and not SES_CONFIGURATION_SET.match(value):
            raise ValueError("ACCRUE_SES_CONFIGURATION_SET: 1-64 of letters, digits, _ and -")
        return value

    @field_validator("stripe_webhook_secrets", "shopify_webhook_secrets", mode="before")
    @classmethod
    def split_comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("standard_webhook_secrets", mode="before")
    @classmethod
    def secrets_as_lists(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {name: [secret] if isinstance(secret, str) else secret for name, secret in value.items()}
        return value

    @model_validator(mode="after")
    def check_webhook_settings(self) -> Settings:
        for name, secrets in self.standard_webhook_secrets.items():
            field = f"ACCRUE_STANDARD_WEBHOOK_SECRETS[{name}]"
            if not WEBHOOK_SOURCE_NAME.match(name) or name in BUILT_IN_WEBHOOK_PROVIDERS:
                raise ValueError(f"{field}: a source name is 1-40 of a-z 0-9 _ - and not stripe or shopify")
            if not secrets:
                raise ValueError(f"{field}: needs at least one whsec_ secret")
            for secret in secrets:
                if not secret.startswith("whsec_"):
                    raise ValueError(f"{field}: a Standard Webhooks secret starts with whsec_")
                key = secret.removeprefix("whsec_")
                try:
                    decoded = base64.b64decode(key + "=" * (-len(key) % 4), validate=True)
                except binascii.Error:
                    decoded = b""
                if not decoded:
                    raise ValueError(f"{field}: the part after whsec_ must be non-empty base64")
        if self.env == "production":
            if self.webhooks_allow_loopback:
                raise ValueError("ACCRUE_WEBHOOKS_ALLOW_LOOPBACK: refused when ACCRUE_ENV=production")
            configured = {
                "ACCRUE_STRIPE_WEBHOOK_SECRETS": self.stripe_webhook_secrets,
                "ACCRUE_SHOPIFY_WEBHOOK_SECRETS": self.shopify_webhook_secrets,
                **{f"ACCRUE_STANDARD_WEBHOOK_SECRETS[{k}]": v for k, v in self.standard_webhook_secrets.items()},
            }
            for field, secrets in configured.items():
                for secret in secrets:
                    if secret == DEVELOPMENT_WEBHOOK_SECRET:
                        raise ValueError(f"{field}: the development webhook secret is refused in production")
                    if len(secret) < MIN_PRODUCTION_WEBHOOK_SECRET_LENGTH:
                        raise ValueError(
                            f"{field}: secrets must be at least {MIN_PRODUCTION_WEBHOOK_SECRET_LENGTH} "
                            "characters in production"
                        )
        return self


# The keys of the webhook secrets document (ACCRUE_WEBHOOK_SECRETS_ARN) and the settings they fill.
WEBHOOK_SECRETS_DOCUMENT = {
    "stripe": "stripe_webhook_secrets",
    "shopify": "shopify_webhook_secrets",
    "standard": "standard_webhook_secrets",
}
WEBHOOK_SECRETS_DOCUMENT_SHAPE = '{"stripe": ["..."], "shopify": ["..."], "standard": {"<source>": ["whsec_..."]}}'


def with_webhook_secrets(settings: Settings, document: str, *, origin: str = "ACCRUE_WEBHOOK_SECRETS_ARN") -> Settings:
    """``settings`` with the provider secrets of ``document`` (the JSON value of the webhook secrets
    secret), validated again by ``Settings`` so that every rule of the environment variables applies.

    Every key is optional; a provider the document names (or a Standard Webhooks source under
    ``standard``) replaces what the environment set for it, the others keep their environment
    values. A string stands for a one-element list. Anything else (not JSON, another shape, an
    unknown key) is a ``ValueError`` starting with ``origin``; messages never quote a secret.
    """
    try:
        parsed = json.loads(document)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{origin}: the secret's value is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{origin}: the secret's value must be a JSON object {WEBHOOK_SECRETS_DOCUMENT_SHAPE}")
    unknown = sorted(set(parsed) - set(WEBHOOK_SECRETS_DOCUMENT))
    if unknown:
        names = ", ".join(repr(name[:40]) for name in unknown)
        raise ValueError(f"{origin}: unknown key(s) {names}; the keys are stripe, shopify and standard")
    updates: dict[str, Any] = {}
    for provider in ("stripe", "shopify"):
        if provider in parsed:
            updates[WEBHOOK_SECRETS_DOCUMENT[provider]] = _secret_list(parsed[provider], provider, origin)
    if "standard" in parsed:
        sources = parsed["standard"]
        if not isinstance(sources, dict):
            raise ValueError(f'{origin}: standard must be a JSON object {{"<source>": ["whsec_..."]}}')
        updates["standard_webhook_secrets"] = {
            **settings.standard_webhook_secrets,
            **{name: _secret_list(value, f"standard[{name}]", origin) for name, value in sources.items()},
        }
    try:
        return Settings(**{**settings.model_dump(), **updates})
    except ValidationError as exc:
        # Only the rules' messages: pydantic's own rendering would print the input (the secrets).
        problems = "; ".join(_from_document(str(error["msg"]).removeprefix("Value error, ")) for error in exc.errors())
        raise ValueError(f"{origin}: {problems}") from None


def _secret_list(value: Any, key: str, origin: str) -> list[str]:
    secrets = [value] if isinstance(value, str) else value
    if not isinstance(secrets, list):
        raise ValueError(f"{origin}: {key} must be a list of secrets (strings) or one string")
    for index, secret in enumerate(secrets):
        if not isinstance(secret, str) or not secret:
            raise ValueError(f"{origin}: {key}[{index}] must be a non-empty string")
    return secrets


def _from_document(message: str) -> str:
    """A rule's message with the setting it names spelled as the document's key (it came from there)."""
    return (
        message.replace("ACCRUE_STRIPE_WEBHOOK_SECRETS", "stripe")
        .replace("ACCRUE_SHOPIFY_WEBHOOK_SECRETS", "shopify")
        .replace("ACCRUE_STANDARD_WEBHOOK_SECRETS[", "standard[")
    )
