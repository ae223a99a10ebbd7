"""Inbound webhook provider secrets from Secrets Manager: the HTTP function, built from its
environment as the stack sets it (``ACCRUE_WEBHOOK_SECRETS_ARN``, no provider secret in the
environment), accepts a Stripe webhook signed with a secret that exists only in Secrets Manager, and
a malformed secret value fails the cold start with a message naming the variable and the problem."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from accrue.config import DEVELOPMENT_WEBHOOK_SECRET
from accrue.entrypoints.lambdas import http, runtime
from tests.aws.conftest import Aws, LambdaContext
from tests.aws.test_lambda_http import api_event, call
from tests.conftest import SECRET
from tests.integration.test_webhooks_inbound import stripe_event, stripe_headers

STRIPE_SECRET = "whsec_only_in_secrets_manager_0123456789abcdef"
OTHER_STRIPE_SECRET = "whsec_a_secret_accrue_was_never_given_012345"
PROVIDER_VARIABLES = (
    "ACCRUE_STRIPE_WEBHOOK_SECRETS",
    "ACCRUE_SHOPIFY_WEBHOOK_SECRETS",
    "ACCRUE_STANDARD_WEBHOOK_SECRETS",
)


@pytest.fixture
def deployed(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """The HTTP function's environment (production, both secrets in Secrets Manager, nothing built
    yet); returns a function that stores a webhook secrets value and names it in the environment."""
    manager = aws.clients["secretsmanager"]
    jwt_arn = manager.create_secret(Name="accrue/test/jwt-secret", SecretString=SECRET)["ARN"]
    settings = aws.settings
    environment = {
        "ACCRUE_ENV": "production",
        "ACCRUE_BACKEND": "aws",
        "ACCRUE_TABLE_NAME": settings.table_name,
        "ACCRUE_PAYMENTS_QUEUE_URL": settings.payments_queue_url,
        "ACCRUE_NOTIFICATIONS_QUEUE_URL": settings.notifications_queue_url,
        "ACCRUE_REPORTS_BUCKET": settings.reports_bucket,
        "ACCRUE_UPLOADS_BUCKET": settings.uploads_bucket,
        "ACCRUE_ARCHIVE_BUCKET": settings.archive_bucket,
        "ACCRUE_NOTIFICATIONS_TOPIC_ARN": settings.notifications_topic_arn,
        "ACCRUE_EVENT_BUS_NAME": settings.event_bus_name,
        "ACCRUE_JWT_SECRET_ARN": jwt_arn,
        "ACCRUE_RATE_LIMIT_PER_SECOND": "0",
        "ACCRUE_WORKERS_ENABLED": "false",
        "ACCRUE_SCHEDULER_ENABLED": "false",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, str(value))
    for name in PROVIDER_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def store(value: str) -> str:
        arn = str(manager.create_secret(Name="accrue/test/webhook-secrets", SecretString=value)["ARN"])
        monkeypatch.setenv("ACCRUE_WEBHOOK_SECRETS_ARN", arn)
        return arn

    # A cold start: the application is built from the environment by the first invocation.
    runtime.use(None, **{name: c for name, c in aws.clients.items() if name != "dynamodbstreams"})
    http.adapter.cache_clear()
    try:
        yield store
    finally:
        try:
            built = runtime.application()
        except ValueError:
            built = None  # the cold start was refused: nothing to close
        if built is not None:
            built.close()
        http.adapter.cache_clear()


def stripe_webhook(body: bytes, secret: str) -> dict[str, Any]:
    """API Gateway's proxy event for a Stripe delivery: the raw body and Stripe's signature header."""
    event = api_event("POST", "/webhooks/stripe", headers=stripe_headers(body, secret))
    event["body"] = body.decode()
    return event


def test_a_stripe_webhook_signed_with_a_secret_only_in_secrets_manager_is_accepted(
    aws: Aws, deployed: Callable[[str], str], context: LambdaContext
) -> None:
    deployed(json.dumps({"stripe": [STRIPE_SECRET]}))
    status, created = call(api_event("POST", "/users", {"email": "dana@example.com", "name": "Dana"}), context)
    assert status == 201, created
    user_id = created["data"]["userId"]
    assert runtime.application().settings.stripe_webhook_secrets == [STRIPE_SECRET]

    status, refused = call(stripe_webhook(stripe_event(user_id, event_id="evt_forged"), OTHER_STRIPE_SECRET), context)
    assert status == 401, refused
    assert refused["success"] is False

    status, applied = call(stripe_webhook(stripe_event(user_id), STRIPE_SECRET), context)
    assert status == 200, applied
    assert applied["data"]["status"] == "applied"
    assert applied["data"]["orderId"] == "stripe_pi_3Q"
    assert applied["data"]["pointsEarned"] == 15
    status, balance = call(api_event("GET", f"/points/{user_id}"), context)
    assert status == 200 and balance["data"]["balance"] == 115
    archived = aws.clients["s3"].list_objects_v2(Bucket="accrue-archive-test").get("Contents", [])
    assert len(archived) == 1


def test_without_the_secret_the_same_environment_has_no_stripe_endpoint(
    deployed: Callable[[str], str], context: LambdaContext
) -> None:
    # The control: nothing in the environment configures Stripe, so the secret above is what did.
    deployed("{}")
    status, refused = call(stripe_webhook(stripe_event("usr_1"), STRIPE_SECRET), context)
    assert status == 404, refused
    assert runtime.application().settings.stripe_webhook_secrets == []


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("stripe: " + STRIPE_SECRET, "the secret's value is not JSON"),
        (json.dumps([STRIPE_SECRET]), "the secret's value must be a JSON object"),
        (json.dumps({"strpie": [STRIPE_SECRET]}), "unknown key(s) 'strpie'"),
        (json.dumps({"stripe": {"current": STRIPE_SECRET}}), "stripe must be a list of secrets"),
        (json.dumps({"standard": {"pos": "not-a-whsec-secret-0123456789"}}), "standard[pos]: a Standard Webhooks"),
        (json.dumps({"stripe": [DEVELOPMENT_WEBHOOK_SECRET]}), "stripe: the development webhook secret is refused"),
        (json.dumps({"shopify": ["shpss_short"]}), "shopify: secrets must be at least 24 characters in production"),
    ],
    ids=["not-json", "array", "unknown-key", "wrong-shape", "not-whsec", "development-secret", "short-secret"],
)
def test_a_malformed_secret_value_fails_the_cold_start_naming_the_variable_and_the_problem(
    deployed: Callable[[str], str], context: LambdaContext, value: str, problem: str
) -> None:
    deployed(value)
    with pytest.raises(ValueError) as refused:
        http.handler(api_event("GET", "/health"), context)
    message = str(refused.value)
    assert message.startswith("ACCRUE_WEBHOOK_SECRETS_ARN: "), message
    assert problem in message
    assert STRIPE_SECRET.removeprefix("whsec_") not in message


def test_a_corrected_secret_is_read_by_the_next_invocation_without_a_deployment(
    aws: Aws, deployed: Callable[[str], str], context: LambdaContext
) -> None:
    arn = deployed(json.dumps({"stripe": "whsec_short"}))
    with pytest.raises(ValueError, match="ACCRUE_WEBHOOK_SECRETS_ARN: stripe: secrets must be at least 24"):
        http.handler(api_event("GET", "/health"), context)
    aws.clients["secretsmanager"].put_secret_value(SecretId=arn, SecretString=json.dumps({"stripe": STRIPE_SECRET}))
    status, _ = call(api_event("GET", "/health"), context)
    assert status == 200
    assert runtime.application().settings.stripe_webhook_secrets == [STRIPE_SECRET]
