"""Pure rules of webhooks: the retry schedule, attempt outcomes, event types and payloads, and the
SSRF guard's verdict on addresses and URLs."""

from __future__ import annotations

import ipaddress
import socket
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import pytest

from accrue.adapters.local import ssrf
from accrue.config import DEVELOPMENT_WEBHOOK_SECRET, Settings
from accrue.domain.errors import InvalidInput
from accrue.domain.webhooks import (
    DEFAULT_RETRY_SCHEDULE_SECONDS,
    OUTBOUND_EVENT_TYPES,
    PUBLIC_EVENT_TYPES,
    AttemptOutcome,
    RetrySchedule,
    UrlRefused,
    classify_attempt,
    inbound_blob_key,
    outbound_payload,
    validate_event_types,
)
from accrue.entrypoints.api.routers.webhooks import EventType

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_the_default_schedule_is_the_standard_webhooks_one() -> None:
    assert DEFAULT_RETRY_SCHEDULE_SECONDS == (0, 5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)


def test_each_failure_waits_the_next_delay_and_the_schedule_runs_out_after_its_last_attempt() -> None:
    schedule = RetrySchedule()
    assert schedule.first_attempt_at(NOW) == NOW
    assert schedule.next_attempt_at(1, NOW) == NOW + timedelta(seconds=5)
    assert schedule.next_attempt_at(2, NOW) == NOW + timedelta(minutes=5)
    assert schedule.next_attempt_at(7, NOW) == NOW + timedelta(hours=10)
    assert schedule.next_attempt_at(8, NOW) is None
    assert schedule.max_attempts == 8


def test_a_schedule_needs_an_attempt_and_no_negative_delay() -> None:
    with pytest.raises(InvalidInput):
        RetrySchedule(())
    with pytest.raises(InvalidInput):
        RetrySchedule((0, -1))


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, AttemptOutcome.SUCCEEDED),
        (204, AttemptOutcome.SUCCEEDED),
        (301, AttemptOutcome.RETRY),
        (404, AttemptOutcome.RETRY),
        (410, AttemptOutcome.ENDPOINT_GONE),
        (500, AttemptOutcome.RETRY),
        (None, AttemptOutcome.RETRY),
    ],
)
def test_only_2xx_succeeds_and_410_means_the_endpoint_is_gone(status: int | None, outcome: AttemptOutcome) -> None:
    assert classify_attempt(status) is outcome


def test_event_types_are_validated_and_de_duplicated_in_order() -> None:
    assert validate_event_types(["tier.upgraded", "points.earned", "tier.upgraded"]) == (
        "tier.upgraded",
        "points.earned",
    )
    with pytest.raises(InvalidInput) as refused:
        validate_event_types(["tier.upgraded", "points.spent"])
    assert refused.value.field == "events[1]"


def test_the_api_schema_lists_exactly_the_public_event_types() -> None:
    assert set(get_args(EventType)) == PUBLIC_EVENT_TYPES
    assert set(OUTBOUND_EVENT_TYPES) == {
        "PointsEarned",
        "TierUpgraded",
        "MilestonesReached",
        "ReferralSignedUp",
        "PayoutCompleted",
        "PaymentProcessed",
        "PaymentFailed",
    }


def test_a_payload_is_type_timestamp_and_camel_case_data_without_internal_fields() -> None:
    payload = outbound_payload(
        "PayoutCompleted",
        {
            "event_id": "evt_1",
            "occurred_at": "2026-03-01T12:00:00+00:00",
            "run_id": "pay_1",
            "total_cents": 2500,
            "report_location": "/srv/accrue/var/blobs/payouts/2026-02/report.csv",
            "report_key": "payouts/2026-02/report.csv",
        },
    )
    assert payload == {
        "type": "payout.completed",
        "timestamp": "2026-03-01T12:00:00+00:00",
        "data": {"eventId": "evt_1", "occurredAt": "2026-03-01T12:00:00+00:00", "runId": "pay_1", "totalCents": 2500},
    }


def test_archive_keys_are_dated_and_safe_whatever_the_event_id() -> None:
    assert inbound_blob_key("stripe", "evt_1", NOW) == "webhooks/inbound/stripe/2026/03/01/evt_1.json"
    assert inbound_blob_key("pos", "../../etc/passwd", NOW) == "webhooks/inbound/pos/2026/03/01/.._.._etc_passwd.json"


# -- SSRF ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "172.31.255.255",
        "192.168.0.1",
        "127.0.0.1",
        "127.8.8.8",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "192.0.2.10",
        "::1",
        "fe80::1",
        "fc00::1",
        "::",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "2001:db8::1",
    ],
)
def test_non_public_addresses_are_forbidden(address: str) -> None:
    assert ssrf.forbidden_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert ssrf.forbidden_reason(ipaddress.ip_address(address)) is None


def test_loopback_is_allowed_only_when_the_development_setting_says_so() -> None:
    for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert ssrf.forbidden_reason(ipaddress.ip_address(address), allow_loopback=True) is None
    assert ssrf.forbidden_reason(ipaddress.ip_address("10.0.0.1"), allow_loopback=True) == "is a private address"


def resolver(*addresses: str) -> Any:
    def resolve(host: str, port: int, **kwargs: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    return resolve


def test_a_name_is_refused_if_any_of_its_addresses_is_private() -> None:
    with pytest.raises(UrlRefused, match=r"10\.0\.0\.9"):
        ssrf.check_url("https://hooks.example.com/x", resolver=resolver("93.184.215.14", "10.0.0.9"))
    target = ssrf.check_url("https://hooks.example.com:8443/x?y=1", resolver=resolver("93.184.215.14"))
    assert (target.host, target.port, target.host_header) == ("hooks.example.com", 8443, "hooks.example.com:8443")


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("ftp://example.com/", "must be an http or https URL"),
        ("https://user:pw@example.com/", "must not contain credentials"),
        ("https:///nohost", "must name a host"),
        ("https://example.com:99999/", "is not a valid URL"),
        ("https://example.com/#frag", "must not contain a fragment"),
    ],
)
def test_malformed_urls_are_refused_with_the_rule(url: str, rule: str) -> None:
    with pytest.raises(UrlRefused) as refused:
        ssrf.check_url(url, resolver=resolver("93.184.215.14"))
    assert refused.value.rule.startswith(rule)
    assert refused.value.details["field"] == "url"


def test_plain_http_can_be_refused_for_production() -> None:
    with pytest.raises(UrlRefused, match="must use https"):
        ssrf.check_url("http://example.com/", allow_http=False, resolver=resolver("93.184.215.14"))


def test_decimal_and_hex_spellings_of_loopback_are_caught_by_resolving_them() -> None:
    for url in ("http://2130706433/", "http://0x7f000001/", "http://127.1/"):
        with pytest.raises(UrlRefused, match="loopback"):
            ssrf.check_url(url)


# -- settings -------------------------------------------------------------------------------------


def production(**values: Any) -> Settings:
    return Settings(env="production", jwt_secret="p" * 40, **values)  # type: ignore[arg-type]


def test_webhook_secrets_are_read_from_comma_separated_and_json_environment_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACCRUE_STRIPE_WEBHOOK_SECRETS", " whsec_new , whsec_old ,")
    monkeypatch.setenv("ACCRUE_STANDARD_WEBHOOK_SECRETS", '{"pos": "whsec_cG9zLWtleQ", "crm": ["whsec_Y3Jt"]}')
    monkeypatch.setenv("ACCRUE_WEBHOOK_RETRY_SCHEDULE_SECONDS", "[0, 0.5, 1]")
    settings = Settings()
    assert settings.stripe_webhook_secrets == ["whsec_new", "whsec_old"]
    assert settings.standard_webhook_secrets == {"pos": ["whsec_cG9zLWtleQ"], "crm": ["whsec_Y3Jt"]}
    assert settings.webhook_retry_schedule_seconds == [0, 0.5, 1]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"standard_webhook_secrets": {"stripe": ["whsec_Y3Jt"]}}, "not stripe or shopify"),
        ({"standard_webhook_secrets": {"Bad Name": ["whsec_Y3Jt"]}}, "source name"),
        ({"standard_webhook_secrets": {"pos": ["plain"]}}, "starts with whsec_"),
        ({"standard_webhook_secrets": {"pos": ["whsec_***"]}}, "non-empty base64"),
        ({"standard_webhook_secrets": {"pos": []}}, "at least one"),
    ],
)
def test_a_malformed_standard_webhooks_source_is_refused_at_start(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"stripe_webhook_secrets": [DEVELOPMENT_WEBHOOK_SECRET]}, "development webhook secret"),
        ({"shopify_webhook_secrets": ["short"]}, "at least 24 characters"),
        ({"standard_webhook_secrets": {"pos": [DEVELOPMENT_WEBHOOK_SECRET]}}, "development webhook secret"),
        ({"webhooks_allow_loopback": True}, "ACCRUE_WEBHOOKS_ALLOW_LOOPBACK"),
    ],
)
def test_production_refuses_development_or_weak_webhook_settings(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        production(**values)


def test_production_accepts_strong_secrets_and_providers_without_secrets_stay_off() -> None:
    settings = production(stripe_webhook_secrets=["whsec_" + "k" * 32])
    assert settings.shopify_webhook_secrets == []
