"""The webhook secrets document (the JSON value of the secret named by ACCRUE_WEBHOOK_SECRETS_ARN):
merged into the settings and validated again by ``Settings``, so the environment variables' rules
apply; a malformed document is refused with a message naming the variable and the problem, never
quoting a secret."""

from __future__ import annotations

import json
from typing import Any

import pytest

from accrue.config import DEVELOPMENT_WEBHOOK_SECRET, Settings, with_webhook_secrets

ORIGIN = "ACCRUE_WEBHOOK_SECRETS_ARN"
STRIPE = "whsec_stripe_from_secrets_manager_0123456789"
SHOPIFY = "shpss_shopify_from_secrets_manager_0123456789"
POS = "whsec_cG9pbnQtb2Ytc2FsZS1zaWduaW5nLWtleS0yNGI="  # base64 of a 24-byte key
HIDDEN = "whsec_must_never_appear_in_a_message_0123456789"


def production(**values: Any) -> Settings:
    return Settings(env="production", jwt_secret="p" * 40, **values)  # type: ignore[arg-type]


def test_every_provider_of_the_document_is_merged_and_a_string_is_a_one_element_list() -> None:
    merged = with_webhook_secrets(
        production(), json.dumps({"stripe": STRIPE, "shopify": [SHOPIFY, SHOPIFY + "x"], "standard": {"pos": POS}})
    )
    assert merged.stripe_webhook_secrets == [STRIPE]
    assert merged.shopify_webhook_secrets == [SHOPIFY, SHOPIFY + "x"]
    assert merged.standard_webhook_secrets == {"pos": [POS]}
    assert merged.env == "production" and merged.jwt_secret == "p" * 40


def test_a_provider_the_document_names_replaces_the_environment_value_the_others_stay() -> None:
    environment = production(
        stripe_webhook_secrets=["whsec_from_the_environment_0123456789"],
        shopify_webhook_secrets=["shpss_from_the_environment_0123456789"],
        standard_webhook_secrets={"crm": [POS], "pos": [POS]},
    )
    next_pos = "whsec_bmV4dC1wb2ludC1vZi1zYWxlLWtleS0yNGI="
    merged = with_webhook_secrets(environment, json.dumps({"stripe": [STRIPE], "standard": {"pos": [next_pos]}}))
    assert merged.stripe_webhook_secrets == [STRIPE]
    assert merged.shopify_webhook_secrets == ["shpss_from_the_environment_0123456789"]
    assert merged.standard_webhook_secrets == {"crm": [POS], "pos": [next_pos]}


def test_an_empty_document_changes_nothing() -> None:
    environment = production(stripe_webhook_secrets=[STRIPE])
    assert with_webhook_secrets(environment, "{}") == environment


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("stripe=" + HIDDEN, "the secret's value is not JSON (Expecting value at line 1, column 1)"),
        ("", "the secret's value is not JSON"),
        (json.dumps([HIDDEN]), "the secret's value must be a JSON object"),
        (json.dumps({"stripe": [HIDDEN], "paypal": [HIDDEN]}), "unknown key(s) 'paypal'; the keys are stripe"),
        (json.dumps({"pos": [HIDDEN]}), "unknown key(s) 'pos'"),
        (json.dumps({"stripe": {"current": HIDDEN}}), "stripe must be a list of secrets (strings) or one string"),
        (json.dumps({"shopify": [HIDDEN, 42]}), "shopify[1] must be a non-empty string"),
        (json.dumps({"stripe": [""]}), "stripe[0] must be a non-empty string"),
        (json.dumps({"standard": [HIDDEN]}), "standard must be a JSON object"),
        (json.dumps({"standard": {"pos": {"key": HIDDEN}}}), "standard[pos] must be a list of secrets"),
        (json.dumps({"standard": {"pos": "not-whsec-" + HIDDEN}}), "standard[pos]: a Standard Webhooks secret starts"),
        (json.dumps({"standard": {"pos": []}}), "standard[pos]: needs at least one whsec_ secret"),
        (json.dumps({"standard": {"stripe": [POS]}}), "standard[stripe]: a source name is 1-40 of a-z 0-9 _ -"),
        (json.dumps({"stripe": [DEVELOPMENT_WEBHOOK_SECRET]}), "stripe: the development webhook secret is refused"),
        (json.dumps({"shopify": ["shpss_short"]}), "shopify: secrets must be at least 24 characters in production"),
    ],
    ids=[
        "not-json",
        "empty-string",
        "array",
        "unknown-provider",
        "source-outside-standard",
        "object-for-a-list",
        "number-in-a-list",
        "empty-secret",
        "standard-not-an-object",
        "standard-source-not-a-list",
        "standard-not-whsec",
        "standard-no-secret",
        "standard-reserved-name",
        "development-secret",
        "short-secret",
    ],
)
def test_a_malformed_document_is_refused_naming_the_variable_and_the_problem(document: str, problem: str) -> None:
    with pytest.raises(ValueError) as refused:
        with_webhook_secrets(production(), document)
    message = str(refused.value)
    assert message.startswith(f"{ORIGIN}: ")
    assert problem in message
    assert HIDDEN.removeprefix("whsec_") not in message
    assert DEVELOPMENT_WEBHOOK_SECRET not in message


def test_the_environments_rules_apply_as_they_do_to_the_variables_outside_production() -> None:
    # Outside production short and development secrets are fine (local trials); the format is not.
    development = Settings(env="development")
    assert with_webhook_secrets(development, json.dumps({"stripe": "whsec_x"})).stripe_webhook_secrets == ["whsec_x"]
    with pytest.raises(ValueError, match=r"^ACCRUE_WEBHOOK_SECRETS_ARN: standard\[pos\]: the part after whsec_"):
        with_webhook_secrets(development, json.dumps({"standard": {"pos": "whsec_***"}}))
