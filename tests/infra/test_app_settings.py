"""The CDK app's settings and the way synthesis results are read (no synthesis needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from accrue_infra.acknowledgements import nag_reference
from accrue_infra.settings import (
    PACKAGED_LAMBDA_DIR,
    REPO_ROOT,
    SOURCE_LAMBDA_DIR,
    DeploymentSettings,
    SettingsError,
)
from accrue_infra.synth import construct_annotations, nag_findings

pytestmark = pytest.mark.infra


def settings(**context: Any) -> DeploymentSettings:
    return DeploymentSettings.from_context(context.get)


def test_defaults_are_a_dev_environment_that_keeps_its_data() -> None:
    chosen = settings()

    assert chosen.env_suffix == "dev"
    assert chosen.destroyable is False
    assert chosen.log_retention_days == 365
    assert chosen.name("payments-dlq") == "accrue-payments-dlq-dev"


@pytest.mark.parametrize("suffix", ["Prod", "1st", "a" * 17, "with_underscore", "trailing-", ""])
def test_an_unusable_environment_suffix_is_refused_with_the_rule(suffix: str) -> None:
    if suffix == "":
        assert settings(env_suffix=suffix).env_suffix == "dev"
        return
    with pytest.raises(SettingsError) as raised:
        settings(env_suffix=suffix)

    assert "env_suffix=" in str(raised.value)
    assert "lowercase letters" in str(raised.value)


def test_context_strings_from_the_cli_are_parsed() -> None:
    chosen = settings(env_suffix="qa-2", destroyable="true", log_retention_days="30", tags={"Team": "payments"})

    assert chosen.env_suffix == "qa-2"
    assert chosen.destroyable is True
    assert chosen.log_retention_days == 30
    assert chosen.extra_tags == {"Team": "payments"}


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"destroyable": "maybe"}, "destroyable='maybe': must be true or false"),
        ({"log_retention_days": "10"}, "log_retention_days=10: must be one of"),
        ({"tags": ["a"]}, "tags: must be a JSON object"),
        ({"lambda_asset": "docs"}, "lambda_asset=docs: no accrue package in it"),
    ],
)
def test_bad_context_values_name_the_key_and_the_rule(context: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        settings(**context)

    assert message in str(raised.value)


def test_the_lambda_asset_is_the_package_when_built_else_the_source_tree() -> None:
    assert settings(lambda_asset="src").lambda_code_dir() == SOURCE_LAMBDA_DIR == REPO_ROOT / "src"
    expected = PACKAGED_LAMBDA_DIR if (PACKAGED_LAMBDA_DIR / "accrue").is_dir() else SOURCE_LAMBDA_DIR
    assert settings().lambda_code_dir() == expected


def test_nag_findings_are_read_from_the_validation_report(tmp_path: Path) -> None:
    report = tmp_path / "policy-validation-report.json"
    report.write_text(
        json.dumps(
            {
                "pluginReports": [
                    {
                        "violations": [
                            {
                                "ruleName": "AwsSolutions-SQS4",
                                "description": "The SQS queue does not require requests to use SSL.",
                                "violatingResources": [{"constructPath": "S/Q/Resource"}],
                            }
                        ]
                    }
                ]
            }
        )
    )

    assert nag_findings(report) == [
        "AwsSolutions-SQS4 S/Q/Resource: The SQS queue does not require requests to use SSL."
    ]
    assert nag_findings(tmp_path / "missing.json") == []


def test_construct_warnings_are_read_from_the_stack_metadata_file(tmp_path: Path) -> None:
    (tmp_path / "S.metadata.json").write_text(
        json.dumps(
            {
                "/S/Api": [
                    {"type": "aws:cdk:logicalId", "data": "Api"},
                    {"type": "aws:cdk:warning", "data": "something is ignored"},
                ]
            }
        )
    )
    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {"artifacts": {"S": {"type": "aws:cloudformation:stack", "additionalMetadataFile": "S.metadata.json"}}}
        )
    )

    assert construct_annotations(tmp_path / "manifest.json") == ["aws:cdk:warning /S/Api: something is ignored"]


def test_references_are_spelled_as_cdk_nag_spells_them_in_finding_ids() -> None:
    joined = {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":s3:::b-", {"Ref": "AWS::AccountId"}, "/*"]]}

    assert nag_reference(joined) == "arn:<AWS::Partition>:s3:::b-<AWS::AccountId>/*"
    assert nag_reference({"Fn::Join": ["", [{"Fn::GetAtt": ["Bucket1", "Arn"]}, "/*"]]}) == "<Bucket1.Arn>/*"
    with pytest.raises(ValueError):
        nag_reference({"Fn::Sub": "x"})
