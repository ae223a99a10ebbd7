"""Render a domain ``Workflow`` (``accrue.domain.payment_workflow``) as Amazon States Language.

The local worker interprets the same ``Workflow`` step by step; this renderer turns it into a Step
Functions definition so both deployments run one definition. Every step becomes a ``Task`` state
that invokes the workflow-steps Lambda function with ``{"task": <step.task>, "input": <state>}``;
the function returns the new state, which becomes the state machine's state.

- ``Step.retry`` becomes a ``Retry`` entry (``max_retries`` is ASL's ``MaxAttempts``: retries after
  the first attempt). Lambda's own transient service errors are retried first, separately, so an
  invocation hiccup never uses up the domain's retry budget.
- ``Step.catch`` becomes ``Catch`` entries; the error goes to ``$.error`` so the failure step sees
  both the payment and why it failed. ``States.ALL`` is always the last catcher, as ASL requires.
- ``Step.choices`` (result value -> step) becomes a ``Choice`` state after the task that compares
  the ``result`` field of the task's output; any other value goes to ``Step.next``.
"""

from __future__ import annotations

from typing import Any

from accrue.domain.payment_workflow import ANY_ERROR, RetryPolicy, Step, Workflow

# Substituted by CDK (``definition_substitutions``) with the function's ARN at deploy time.
FUNCTION_ARN_PLACEHOLDER = "${WorkflowStepsFunctionArn}"
# The task output field a Choice state compares (see ``Step.choices``).
CHOICE_FIELD = "$.result"
ERROR_RESULT_PATH = "$.error"

# Transient Lambda invocation errors: AWS recommends retrying these on every Lambda task.
LAMBDA_SERVICE_ERRORS = (
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
)
LAMBDA_SERVICE_RETRY: dict[str, Any] = {
    "ErrorEquals": list(LAMBDA_SERVICE_ERRORS),
    "IntervalSeconds": 1,
    "BackoffRate": 2.0,
    "MaxAttempts": 3,
}


class WorkflowDefinitionError(ValueError):
    """The workflow cannot be expressed in (or would be invalid) ASL."""


def render_asl(workflow: Workflow, function_arn: str = FUNCTION_ARN_PLACEHOLDER) -> dict[str, Any]:
    """The state machine definition (a JSON-serialisable dict) for ``workflow``."""
    _check_targets(workflow)
    states: dict[str, Any] = {}
    for step in workflow.steps:
        states.update(_states_for(step, function_arn))
    return {
        "Comment": f"accrue {workflow.name} workflow, rendered from accrue.domain (do not edit by hand)",
        "StartAt": workflow.start,
        "States": states,
    }


def choice_state_name(step: Step) -> str:
    return f"{step.name}Result"


def _states_for(step: Step, function_arn: str) -> dict[str, Any]:
    task: dict[str, Any] = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {
            "FunctionName": function_arn,
            "Payload": {"task": step.task, "input.$": "$"},
        },
        # The function returns the new state; drop the invocation metadata around it.
        "OutputPath": "$.Payload",
        "Retry": [LAMBDA_SERVICE_RETRY, *_retriers(step.retry)],
    }
    catchers = _catchers(step)
    if catchers:
        task["Catch"] = catchers
    if not step.choices:
        task.update({"Next": step.next} if step.next else {"End": True})
        return {step.name: task}

    task["Next"] = choice_state_name(step)
    choice: dict[str, Any] = {
        "Type": "Choice",
        "Choices": [
            {"Variable": CHOICE_FIELD, "StringEquals": value, "Next": target} for value, target in step.choices.items()
        ],
    }
    states = {step.name: task, choice_state_name(step): choice}
    if step.next:
        choice["Default"] = step.next
    else:
        done = f"{step.name}Done"
        choice["Default"] = done
        states[done] = {"Type": "Succeed"}
    return states


def _retriers(policy: RetryPolicy | None) -> list[dict[str, Any]]:
    if policy is None:
        return []
    if policy.interval_seconds != int(policy.interval_seconds) or policy.interval_seconds < 1:
        raise WorkflowDefinitionError(
            f"retry interval_seconds={policy.interval_seconds}: Step Functions needs a whole number >= 1"
        )
    if policy.max_retries < 0:
        raise WorkflowDefinitionError(f"retry max_retries={policy.max_retries}: must be >= 0")
    return [
        {
            "ErrorEquals": list(policy.errors),
            "IntervalSeconds": int(policy.interval_seconds),
            "BackoffRate": float(policy.backoff_rate),
            "MaxAttempts": policy.max_retries,
        }
    ]


def _catchers(step: Step) -> list[dict[str, Any]]:
    specific = [(error, target) for error, target in step.catch.items() if error != ANY_ERROR]
    catchers = [{"ErrorEquals": [error], "Next": target, "ResultPath": ERROR_RESULT_PATH} for error, target in specific]
    if ANY_ERROR in step.catch:
        catchers.append({"ErrorEquals": [ANY_ERROR], "Next": step.catch[ANY_ERROR], "ResultPath": ERROR_RESULT_PATH})
    return catchers


def _check_targets(workflow: Workflow) -> None:
    names = [step.name for step in workflow.steps]
    if len(set(names)) != len(names):
        raise WorkflowDefinitionError(f"workflow {workflow.name}: step names must be unique, got {names}")
    known = set(names)
    if workflow.start not in known:
        raise WorkflowDefinitionError(f"workflow {workflow.name}: start step {workflow.start!r} does not exist")
    for step in workflow.steps:
        targets = [step.next, *step.catch.values(), *step.choices.values()]
        for target in targets:
            if target is not None and target not in known:
                raise WorkflowDefinitionError(f"step {step.name}: goes to unknown step {target!r}")
        generated = (choice_state_name(step), f"{step.name}Done") if step.choices else ()
        for name in generated:
            if name in known:
                raise WorkflowDefinitionError(f"step {step.name}: generated state {name!r} clashes with a step name")
    # Step Functions refuses a definition with a state no transition reaches.
    reached: set[str] = set()
    pending = [workflow.start]
    while pending:
        step = workflow.step(pending.pop())
        if step.name in reached:
            continue
        reached.add(step.name)
        pending.extend(t for t in (step.next, *step.catch.values(), *step.choices.values()) if t is not None)
    unreachable = [name for name in names if name not in reached]
    if unreachable:
        raise WorkflowDefinitionError(f"workflow {workflow.name}: unreachable steps {unreachable}")
