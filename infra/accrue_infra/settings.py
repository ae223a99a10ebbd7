"""Deployment settings, read once from CDK context (``-c key=value``) and validated.

Every resource name carries ``env_suffix`` so several environments share one account.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The application's own rules for these values (ACCRUE_SES_*): one definition of a valid sender.
from accrue.config import SES_CONFIGURATION_SET, SES_FROM_ADDRESS

REPO_ROOT = Path(__file__).resolve().parents[2]
# `make lambda-package` writes the runtime dependencies and src/accrue here (Python 3.12, arm64).
PACKAGED_LAMBDA_DIR = REPO_ROOT / "build" / "lambda"
# Without a package (offline synth in tests and `make synth`), the asset is the source tree: the
# template is identical except for the asset hash, and no dependency download is needed.
SOURCE_LAMBDA_DIR = REPO_ROOT / "src"
OPENAPI_DOCUMENT = REPO_ROOT / "docs" / "openapi.json"

_SUFFIX = re.compile(r"^[a-z][a-z0-9-]{0,14}[a-z0-9]$|^[a-z]$")
# Log retention choices (days) and the CloudWatch Logs enum member each maps to.
RETENTION_DAYS = {
    7: "ONE_WEEK",
    14: "TWO_WEEKS",
    30: "ONE_MONTH",
    90: "THREE_MONTHS",
    180: "SIX_MONTHS",
    365: "ONE_YEAR",
    731: "TWO_YEARS",
    1827: "FIVE_YEARS",
    3653: "TEN_YEARS",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


DEFAULT_SUFFIX = "dev"
DEFAULT_LOG_RETENTION_DAYS = 365


class SettingsError(ValueError):
    """A context value is missing or unusable: the message names the key and the rule."""


@dataclass(frozen=True, slots=True)
class DeploymentSettings:
    env_suffix: str = DEFAULT_SUFFIX
    # None: build/lambda when `make lambda-package` made it, else the source tree (see above).
    lambda_asset: Path | None = None
    # Tables, buckets, keys and secrets survive `cdk destroy` unless this is set (test stacks).
    destroyable: bool = False
    # One year by default: a payment system keeps a year of operational logs (PCI DSS 10.7).
    log_retention_days: int = DEFAULT_LOG_RETENTION_DAYS
    # Optional e-mail address subscribed to the alarm topic.
    alarm_email: str | None = None
    # Optional sender of member e-mail through SES: the stack creates its identity (to be verified)
    # and the notifications worker sends from it; unset, e-mail is published to the topic.
    ses_from_address: str | None = None
    # Optional existing SES configuration set the notifications worker names in every send.
    ses_configuration_set: str | None = None
    extra_tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_context(cls, get: Any) -> DeploymentSettings:
        """``get`` is ``node.try_get_context``: values arrive as strings from the CLI, typed from JSON."""
        suffix = str(get("env_suffix") or DEFAULT_SUFFIX)
        if not _SUFFIX.match(suffix):
            raise SettingsError(
                f"env_suffix={suffix!r}: 1-16 characters, lowercase letters, digits and '-', starting with a letter"
            )
        asset = get("lambda_asset")
        asset_path = None
        if asset:
            asset_path = Path(str(asset))
            if not asset_path.is_absolute():
                asset_path = (REPO_ROOT / asset_path).resolve()
            if not (asset_path / "accrue").is_dir():
                raise SettingsError(f"lambda_asset={asset}: no accrue package in it (run `make lambda-package`)")
        retention = int(get("log_retention_days") or DEFAULT_LOG_RETENTION_DAYS)
        if retention not in RETENTION_DAYS:
            raise SettingsError(f"log_retention_days={retention}: must be one of {sorted(RETENTION_DAYS)}")
        tags = get("tags") or {}
        if not isinstance(tags, dict):
            raise SettingsError("tags: must be a JSON object of tag name -> value")
        email = get("alarm_email")
        sender = str(get("ses_from_address") or "").strip() or None
        if sender is not None and not SES_FROM_ADDRESS.match(sender):
            raise SettingsError(f"ses_from_address={sender!r}: must be one bare e-mail address, local@domain.tld")
        configuration_set = str(get("ses_configuration_set") or "").strip() or None
        if configuration_set is not None:
            if sender is None:
                raise SettingsError("ses_configuration_set: needs ses_from_address (it configures SES e-mail)")
            if not SES_CONFIGURATION_SET.match(configuration_set):
                raise SettingsError(f"ses_configuration_set={configuration_set!r}: 1-64 of letters, digits, _ and -")
        return cls(
            env_suffix=suffix,
            lambda_asset=asset_path,
            destroyable=_flag("destroyable", get("destroyable"), default=False),
            log_retention_days=retention,
            alarm_email=str(email) if email else None,
            ses_from_address=sender,
            ses_configuration_set=configuration_set,
            extra_tags={str(k): str(v) for k, v in tags.items()},
        )

    def lambda_code_dir(self) -> Path:
        if self.lambda_asset is not None:
            return self.lambda_asset
        if (PACKAGED_LAMBDA_DIR / "accrue").is_dir():
            return PACKAGED_LAMBDA_DIR
        return SOURCE_LAMBDA_DIR

    def name(self, purpose: str) -> str:
        """``accrue-<purpose>-<suffix>``: the one naming rule for every resource."""
        return f"accrue-{purpose}-{self.env_suffix}"


def _flag(key: str, value: Any, *, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SettingsError(f"{key}={value!r}: must be true or false")
