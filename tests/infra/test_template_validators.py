"""Acceptance 1: the synthesized template passes cdk-nag, cfn-lint, checkov and asl-validator, offline."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack, Validations
from aws_cdk import aws_sqs as sqs
from cdk_nag import AwsSolutionsChecks

from accrue_infra import acknowledgements
from accrue_infra.synth import FEATURE_FLAGS, VALIDATION_FAILED, VALIDATION_REPORT, Synthesis, nag_findings
from accrue_infra.validators import (
    CFN_LINT_IGNORED,
    CheckovFailure,
    ToolMissing,
    asl_validator,
    cfn_lint,
    checkov_skips,
)
from accrue_infra.workflow_asl import FUNCTION_ARN_PLACEHOLDER
from tests.infra.conftest import of_type, require_tool

pytestmark = pytest.mark.infra

# A reason a reviewer can weigh says what and why; a few words cannot.
MIN_REASON_WORDS = 15


def test_cdk_nag_aws_solutions_has_no_unacknowledged_finding(synthesis: Synthesis) -> None:
    assert synthesis.findings == []


def test_cdk_nag_as_configured_reports_a_violation_the_checks_would_see(tmp_path: Path) -> None:
    # The same plugin and report reader on a queue without TLS enforcement: an empty finding list
    # above means "nothing found", not "nothing ran".
    app = App(outdir=str(tmp_path), context=FEATURE_FLAGS)
    sqs.Queue(Stack(app, "Probe"), "Queue", dead_letter_queue=None)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(RuntimeError, match=VALIDATION_FAILED):
        app.synth()

    assert any(
        f.startswith("AwsSolutions-SQS4 Probe/Queue/Resource") for f in nag_findings(tmp_path / VALIDATION_REPORT)
    )


def test_cdk_itself_attaches_no_warning_or_error_to_any_construct(synthesis: Synthesis) -> None:
    assert synthesis.annotations == []


def test_every_acknowledged_nag_finding_carries_a_reviewed_reason(synthesis: Synthesis) -> None:
    metadata = json.loads((synthesis.outdir / f"{synthesis.stack_name}.metadata.json").read_text(encoding="utf-8"))
    acknowledged = [
        (path, rule, reason)
        for path, entries in metadata.items()
        for entry in entries
        if entry["type"] == "aws:cdk:acknowledged-rules"
        for rule, reason in entry["data"].items()
    ]
    reviewed = {" ".join(reason.split()) for reason in acknowledgements.REASONS.values()}

    assert acknowledged, "the stack acknowledges findings: the metadata must show them"
    for path, rule, reason in acknowledged:
        assert rule.startswith("AwsSolutions::AwsSolutions-"), (path, rule)
        assert " ".join(reason.split()) in reviewed, (path, rule)
    assert all(len(r.split()) >= MIN_REASON_WORDS for r in acknowledgements.REASONS.values())


def test_cfn_lint_reports_no_error_and_no_warning(synthesis: Synthesis) -> None:
    findings = cfn_lint(synthesis.template_path)

    assert [f for f in findings if f.severity in ("error", "warning")] == []
    assert all(len(reason.split()) >= MIN_REASON_WORDS for reason in CFN_LINT_IGNORED.values())


@pytest.fixture(scope="module")
def checkov_failures(checkov_results: Callable[[], list[CheckovFailure]]) -> list[CheckovFailure]:
    return checkov_results()


def test_checkov_fails_no_check_outside_the_reviewed_skip_list(checkov_failures: list[CheckovFailure]) -> None:
    skips = checkov_skips()
    unexplained = [f for f in checkov_failures if not any(skip.covers(f) for skip in skips.values())]

    assert unexplained == []


def test_every_checkov_skip_has_a_reason_a_scope_and_still_applies(checkov_failures: list[CheckovFailure]) -> None:
    skips = checkov_skips()
    failing_ids = {f.check_id for f in checkov_failures}

    for skip in skips.values():
        assert len(skip.reason.split()) >= MIN_REASON_WORDS, skip.check_id
        assert skip.resources, f"{skip.check_id}: list the resources the skip applies to"
        # A skip for a check that passes is stale: it would silently hide a future regression.
        assert skip.check_id in failing_ids, f"{skip.check_id} no longer fails: remove it from checkov-skips.toml"


def test_checkov_actually_ran_its_cloudformation_checks(checkov_failures: list[CheckovFailure]) -> None:
    # The known, reviewed failures are there: an empty result would mean checkov checked nothing.
    assert {"CKV_AWS_117", "CKV_AWS_173"} <= {f.check_id for f in checkov_failures}


def test_only_methods_declared_public_fail_the_open_access_check(
    checkov_failures: list[CheckovFailure], resources: dict[str, dict[str, Any]]
) -> None:
    methods = of_type(resources, "AWS::ApiGateway::Method")
    public = {
        f"AWS::ApiGateway::Method.{lid}" for lid, m in methods.items() if m["Properties"]["AuthorizationType"] == "NONE"
    }
    open_access = {f.resource for f in checkov_failures if f.check_id == "CKV_AWS_59"}

    assert open_access <= public


def test_the_deployed_state_machine_definition_passes_the_pinned_asl_validator(
    resources: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    (machine,) = of_type(resources, "AWS::StepFunctions::StateMachine").values()
    # CDK substitutes the steps function's ARN at deploy time; any well-formed ARN stands in for it.
    text = machine["Properties"]["DefinitionString"].replace(
        FUNCTION_ARN_PLACEHOLDER, "arn:aws:lambda:eu-west-1:123456789012:function:accrue-workflow-steps-citest"
    )
    definition = json.loads(text)
    assert FUNCTION_ARN_PLACEHOLDER in machine["Properties"]["DefinitionString"]
    try:
        ok, output = asl_validator(definition, tmp_path)
    except ToolMissing as missing:
        require_tool(missing)
    assert ok, output
