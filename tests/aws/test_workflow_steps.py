"""The payment workflow on Step Functions: the state machine rendered from the domain definition
(by the CDK app's renderer) is interpreted here the way Step Functions runs it (Task, Retry, Catch,
Choice), each Task invoking the workflow-steps handler in-process with the payload the definition
builds. moto cannot run Lambda tasks without Docker, so the interpreter stands in for the service;
the definition, the payloads and the handler are the real ones."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from accrue.domain.payment_workflow import PAYMENT_WORKFLOW
from accrue.entrypoints.lambdas import workflow_steps
from tests.aws.conftest import Aws, LambdaContext, recorded_event
from tests.aws.test_lambda_http import api_event, call
from tests.moto_support import client

INFRA = Path(__file__).resolve().parents[2] / "infra"
if str(INFRA) not in sys.path:
    sys.path.insert(0, str(INFRA))

from accrue_infra.workflow_asl import render_asl  # noqa: E402


def matches(error: str, equals: list[str]) -> bool:
    return error in equals or "States.ALL" in equals or (error.startswith("States.") and "States.ALL" in equals)


def run_task_state(
    spec: dict[str, Any], state: dict[str, Any], context: LambdaContext
) -> tuple[dict[str, Any], str | None]:
    """One Task state: invoke, retry by the Retry blocks, then catch; returns (state, caught-by Next)."""
    payload = {
        key.removesuffix(".$"): (state if value == "$" else value) if key.endswith(".$") else value
        for key, value in spec["Parameters"]["Payload"].items()
    }
    retries: dict[int, int] = {}
    while True:
        try:
            # Step Functions hands the function a JSON copy of the state.
            return workflow_steps.handler(json.loads(json.dumps(payload)), context), None
        except Exception as exc:  # noqa: BLE001 - any error of the function is an errorType to match
            error = {"Error": type(exc).__name__, "Cause": json.dumps({"errorMessage": str(exc)})}
        retry = next(
            (i for i, r in enumerate(spec.get("Retry", [])) if matches(error["Error"], r["ErrorEquals"])), None
        )
        if retry is not None and retries.get(retry, 0) < spec["Retry"][retry]["MaxAttempts"]:
            retries[retry] = retries.get(retry, 0) + 1
            continue
        catch = next((c for c in spec.get("Catch", []) if matches(error["Error"], c["ErrorEquals"])), None)
        if catch is None:
            raise AssertionError(f"the execution failed: {error}")
        return {**state, "error": error}, str(catch["Next"])


def execute(definition: dict[str, Any], state: dict[str, Any], context: LambdaContext) -> tuple[str, list[str]]:
    """Run the machine to its end; returns the final state's status and the states visited."""
    name = definition["StartAt"]
    visited: list[str] = []
    while True:
        visited.append(name)
        spec = definition["States"][name]
        if spec["Type"] == "Succeed":
            return str(state.get("status")), visited
        if spec["Type"] == "Choice":
            value = state.get("result")
            name = next((c["Next"] for c in spec["Choices"] if c["StringEquals"] == value), spec["Default"])
            continue
        state, caught_by = run_task_state(spec, state, context)
        if caught_by is not None:
            name = caught_by
        elif spec.get("End"):
            return str(state.get("status")), visited
        else:
            name = spec["Next"]


@pytest.fixture
def machine() -> dict[str, Any]:
    return render_asl(PAYMENT_WORKFLOW, "arn:aws:lambda:us-east-1:123456789012:function:accrue-workflow-steps-test")


def create_payment(context: LambdaContext, payment_id: str, amount: str, user_id: str | None = None) -> None:
    body: dict[str, Any] = {"paymentId": payment_id, "amount": amount}
    if user_id:
        body["userId"] = user_id
    status, created = call(api_event("POST", "/payments", body), context)
    assert status == 201, created


def test_the_recorded_task_payload_runs_one_step(aws: Aws, context: LambdaContext) -> None:
    create_payment(context, "pay-0001", "10.00")
    state = workflow_steps.handler(recorded_event("stepfunctions_task.json"), context)
    assert state == {"paymentId": "pay-0001", "status": "processing", "result": None}


def test_a_payment_runs_through_the_rendered_state_machine_and_earns_points_once(
    aws: Aws, context: LambdaContext, machine: dict[str, Any]
) -> None:
    call(api_event("POST", "/users", {"email": "p@example.com", "name": "P", "userId": "payer"}), context)
    create_payment(context, "pay-ok", "120.00", "payer")
    status, visited = execute(machine, {"paymentId": "pay-ok"}, context)
    assert status == "processed"
    assert visited == ["ValidatePayment", "ProcessPayment", "NotifySuccess"]
    _, points = call(api_event("GET", "/points/payer"), context)
    assert points["data"]["balance"] == 100 + 12


def test_a_declined_card_is_caught_and_the_payment_fails_with_its_reason(
    aws: Aws, context: LambdaContext, machine: dict[str, Any]
) -> None:
    create_payment(context, "pay-declined", "12.51")
    status, visited = execute(machine, {"paymentId": "pay-declined"}, context)
    assert (status, visited) == ("failed", ["ValidatePayment", "ProcessPayment", "MarkFailed", "NotifyFailure"])
    _, payment = call(api_event("GET", "/payments/pay-declined"), context)
    assert (payment["data"]["status"], payment["data"]["failureReason"]) == ("failed", "card_declined")


def test_a_transient_failure_is_retried_by_the_machine_and_succeeds_on_the_third_attempt(
    aws: Aws, context: LambdaContext, machine: dict[str, Any]
) -> None:
    create_payment(context, "pay-flaky", "12.52")
    status, _ = execute(machine, {"paymentId": "pay-flaky"}, context)
    assert status == "processed"
    _, payment = call(api_event("GET", "/payments/pay-flaky"), context)
    assert (payment["data"]["status"], payment["data"]["attempts"]) == ("processed", 3)
    _, audit = call(api_event("GET", "/payments/pay-flaky/audit"), context)
    actions = [entry["action"] for entry in audit["data"]["entries"]]
    assert actions.count("payment.attempt_failed") == 2


def test_an_unknown_task_is_an_error_naming_it(aws: Aws, context: LambdaContext) -> None:
    with pytest.raises(workflow_steps.UnknownTask, match="charge_twice"):
        workflow_steps.handler({"task": "charge_twice", "input": {"paymentId": "p"}}, context)


def test_with_a_state_machine_the_payments_worker_starts_one_execution_per_payment_once(
    aws: Aws, context: LambdaContext, machine: dict[str, Any]
) -> None:
    from accrue.entrypoints.lambdas import payments_worker
    from tests.aws.conftest import settle_sqs, sqs_event

    sfn = client("stepfunctions")
    arn = sfn.create_state_machine(
        name="accrue-payment-workflow-test",
        definition=json.dumps(machine),
        roleArn="arn:aws:iam::123456789012:role/accrue-workflow-test",
    )["stateMachineArn"]
    aws.app.settings = aws.settings.model_copy(update={"payment_state_machine_arn": arn})
    create_payment(context, "pay-sfn-1", "10.00")
    create_payment(context, "order:42.shop", "11.00")  # not a valid execution name as it is
    url = aws.settings.payments_queue_url
    assert url is not None
    aws.clients["sqs"].purge_queue(QueueUrl=url)
    body = json.dumps({"paymentIds": ["pay-sfn-1", "order:42.shop"]})
    for _ in range(2):  # the same message delivered twice
        aws.clients["sqs"].send_message(QueueUrl=url, MessageBody=body)
        event = sqs_event(aws, url)
        response = payments_worker.handler(event, context)
        assert response == {"batchItemFailures": []}
        settle_sqs(aws, url, event, response)
    executions = sfn.list_executions(stateMachineArn=arn)["executions"]
    inputs = sorted(
        json.loads(sfn.describe_execution(executionArn=e["executionArn"])["input"])["paymentId"] for e in executions
    )
    assert inputs == ["order:42.shop", "pay-sfn-1"]
    # What each execution then runs: the rendered machine over the workflow-steps function.
    for payment_id in inputs:
        status, _ = execute(machine, {"paymentId": payment_id}, context)
        assert status == "processed"
