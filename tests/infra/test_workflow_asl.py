"""The Step Functions definition is rendered from the domain's payment workflow, not written by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from accrue.domain.payment_workflow import (
    ANY_ERROR,
    DECLINED,
    PAYMENT_WORKFLOW,
    TRANSIENT_ERROR,
    VALIDATION_FAILED,
    RetryPolicy,
    Step,
    Workflow,
)
from accrue_infra.validators import ToolMissing, asl_validator
from accrue_infra.workflow_asl import (
    FUNCTION_ARN_PLACEHOLDER,
    LAMBDA_SERVICE_ERRORS,
    WorkflowDefinitionError,
    render_asl,
)
from tests.infra.conftest import require_tool

pytestmark = pytest.mark.infra

FUNCTION_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:accrue-workflow-steps-test"


def test_every_step_becomes_a_task_invoking_the_steps_function_with_its_task_name() -> None:
    asl = render_asl(PAYMENT_WORKFLOW, FUNCTION_ARN)

    assert asl["StartAt"] == PAYMENT_WORKFLOW.start == "ValidatePayment"
    assert list(asl["States"]) == [step.name for step in PAYMENT_WORKFLOW.steps]
    for step in PAYMENT_WORKFLOW.steps:
        state = asl["States"][step.name]
        assert state["Type"] == "Task"
        assert state["Resource"] == "arn:aws:states:::lambda:invoke"
        assert state["Parameters"] == {"FunctionName": FUNCTION_ARN, "Payload": {"task": step.task, "input.$": "$"}}
        assert state["OutputPath"] == "$.Payload"


def test_transitions_follow_the_workflow_and_terminal_steps_end() -> None:
    states = render_asl(PAYMENT_WORKFLOW)["States"]

    assert states["ValidatePayment"]["Next"] == "ProcessPayment"
    assert states["ProcessPayment"]["Next"] == "NotifySuccess"
    assert states["MarkFailed"]["Next"] == "NotifyFailure"
    assert states["NotifySuccess"]["End"] is True
    assert states["NotifyFailure"]["End"] is True
    assert "Next" not in states["NotifySuccess"]


def test_processing_retries_transient_errors_from_two_seconds_doubling_three_times() -> None:
    retriers = render_asl(PAYMENT_WORKFLOW)["States"]["ProcessPayment"]["Retry"]

    # Lambda's own hiccups first, with their own budget; then the domain's policy (SPEC 4).
    assert retriers[0]["ErrorEquals"] == list(LAMBDA_SERVICE_ERRORS)
    assert retriers[1] == {"ErrorEquals": [TRANSIENT_ERROR], "IntervalSeconds": 2, "BackoffRate": 2.0, "MaxAttempts": 3}
    assert len(retriers) == 2


def test_steps_without_a_retry_policy_only_retry_lambda_service_errors() -> None:
    states = render_asl(PAYMENT_WORKFLOW)["States"]

    assert [r["ErrorEquals"] for r in states["ValidatePayment"]["Retry"]] == [list(LAMBDA_SERVICE_ERRORS)]


def test_catchers_keep_the_error_and_put_states_all_last() -> None:
    states = render_asl(PAYMENT_WORKFLOW)["States"]

    assert states["ProcessPayment"]["Catch"] == [
        {"ErrorEquals": [DECLINED], "Next": "MarkFailed", "ResultPath": "$.error"},
        {"ErrorEquals": [TRANSIENT_ERROR], "Next": "MarkFailed", "ResultPath": "$.error"},
        {"ErrorEquals": [ANY_ERROR], "Next": "MarkFailed", "ResultPath": "$.error"},
    ]
    assert states["ValidatePayment"]["Catch"][0]["ErrorEquals"] == [VALIDATION_FAILED]
    assert states["ValidatePayment"]["Catch"][-1]["ErrorEquals"] == [ANY_ERROR]
    assert "Catch" not in states["NotifySuccess"]


def test_the_arn_defaults_to_a_placeholder_cdk_substitutes() -> None:
    state = render_asl(PAYMENT_WORKFLOW)["States"]["ValidatePayment"]

    assert state["Parameters"]["FunctionName"] == FUNCTION_ARN_PLACEHOLDER == "${WorkflowStepsFunctionArn}"


def test_choices_become_a_choice_state_on_the_task_result_with_next_as_default() -> None:
    workflow = Workflow(
        name="review",
        start="Score",
        steps=(
            Step(name="Score", task="score", next="Accept", choices={"reject": "Reject"}),
            Step(name="Accept", task="accept"),
            Step(name="Reject", task="reject"),
        ),
    )
    states = render_asl(workflow)["States"]

    assert states["Score"]["Next"] == "ScoreResult"
    assert states["ScoreResult"] == {
        "Type": "Choice",
        "Choices": [{"Variable": "$.result", "StringEquals": "reject", "Next": "Reject"}],
        "Default": "Accept",
    }


def test_a_choice_without_next_ends_in_a_succeed_state() -> None:
    workflow = Workflow(
        name="review",
        start="Score",
        steps=(Step(name="Score", task="score", choices={"reject": "Reject"}), Step(name="Reject", task="reject")),
    )
    states = render_asl(workflow)["States"]

    assert states["ScoreResult"]["Default"] == "ScoreDone"
    assert states["ScoreDone"] == {"Type": "Succeed"}


@pytest.mark.parametrize(
    ("workflow", "message"),
    [
        (Workflow("w", "Missing", (Step("A", "a"),)), "start step 'Missing' does not exist"),
        (Workflow("w", "A", (Step("A", "a", next="Nowhere"),)), "goes to unknown step 'Nowhere'"),
        (Workflow("w", "A", (Step("A", "a"), Step("A", "b"))), "step names must be unique"),
        (Workflow("w", "A", (Step("A", "a"), Step("B", "b"))), "unreachable steps ['B']"),
        (
            Workflow("w", "A", (Step("A", "a", retry=RetryPolicy(errors=("E",), interval_seconds=0.5)),)),
            "Step Functions needs a whole number >= 1",
        ),
    ],
)
def test_a_workflow_step_functions_would_refuse_is_refused_at_synthesis(workflow: Workflow, message: str) -> None:
    with pytest.raises(WorkflowDefinitionError) as raised:
        render_asl(workflow)

    assert message in str(raised.value)


def test_the_rendered_payment_workflow_passes_the_pinned_asl_validator(tmp_path: Path) -> None:
    try:
        ok, output = asl_validator(render_asl(PAYMENT_WORKFLOW, FUNCTION_ARN), tmp_path)
    except ToolMissing as missing:
        require_tool(missing)
    assert ok, output


def test_the_asl_validator_rejects_a_broken_definition(tmp_path: Path) -> None:
    broken = render_asl(PAYMENT_WORKFLOW, FUNCTION_ARN)
    broken["States"]["ValidatePayment"]["Next"] = "NoSuchState"
    try:
        ok, _ = asl_validator(broken, tmp_path)
    except ToolMissing as missing:
        require_tool(missing)
    assert not ok
