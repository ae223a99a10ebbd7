"""Every cdk-nag (AwsSolutions) finding this app accepts, with the reason, in one place.

cdk-nag 3 reads acknowledgements from CDK's ``Validations.of(construct).acknowledge``; an
unacknowledged finding fails synthesis. Each helper below acknowledges one finding on the
narrowest construct that has it; IAM5 wildcard findings are acknowledged one finding at a time
(``AwsSolutions-IAM5[Resource::...]``) so a new wildcard still fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_iam as iam
from constructs import IConstruct

# Object-level S3 actions: a wildcard over one bucket's objects is acknowledged only for these.
OBJECT_ACTIONS = frozenset(
    {"s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}
)

REASONS: dict[str, str] = {
    "xray": (
        "X-Ray's PutTraceSegments and PutTelemetryRecords do not support resource-level permissions; "
        "AWS documents Resource '*' for them."
    ),
    "runtime": (
        "Python 3.12 is the project's pinned Lambda runtime: the deployment package is built for "
        "cp312/manylinux2014_aarch64 wheels and tested on that version; moving runtimes is a deliberate upgrade."
    ),
    "objects": (
        "Object keys are data-dependent (uploaded file names, report months, webhook ids); the statement is "
        "scoped to this one bucket's objects and lists its actions without wildcards."
    ),
    "log-delivery": (
        "The state machine's role needs CloudWatch Logs vended-log delivery (CreateLogDelivery, PutResourcePolicy, "
        "DescribeLogGroups ...) and X-Ray (PutTraceSegments ...); none of these actions support resource-level "
        "permissions, so AWS documents Resource '*' for them."
    ),
    "apigw-cloudwatch-role": (
        "AmazonAPIGatewayPushToCloudWatchLogs is the AWS-documented policy of the account-level role API Gateway "
        "uses to write access and execution logs; it is trusted only by apigateway.amazonaws.com."
    ),
    "cognito": (
        "The API authorises with a Lambda TOKEN authorizer that verifies accrue's own JWTs (HS256, roles "
        "admin/member/service), the same tokens the local deployment uses; there is no Cognito user pool."
    ),
    "public-method": (
        "Deliberately public: /health is a liveness probe with no data, and webhook endpoints are called by "
        "third parties (Stripe, Shopify, Standard Webhooks) that authenticate with a signature the function "
        "verifies before anything else."
    ),
    "waf": (
        "No WAF web ACL by default: the stage is throttled (50 req/s, burst 100), every data route needs an "
        "API key (10 000 requests/day usage plan) and a JWT; a WAF (~USD 5/month plus rules) is an account-level "
        "choice documented in docs/OPERATIONS.md."
    ),
    "dlq-itself": (
        "This queue is itself a failure destination (the stream event source mapping's on-failure queue, or the "
        "scheduler's dead-letter queue); a dead-letter queue of a dead-letter queue would only hide messages. Its "
        "depth raises an alarm instead."
    ),
    "secret-rotation": (
        "The JWT signing secret is rotated by the documented runbook (docs/OPERATIONS.md), not automatically: "
        "rotating it invalidates every issued token, so it is a planned operation with a grace period."
    ),
    "webhook-secret-rotation": (
        "The inbound webhook signing secrets are issued and rotated at the provider (Stripe, Shopify, each "
        "Standard Webhooks sender), not by accrue: a Secrets Manager rotation function cannot create them. "
        "Operators rotate with an overlap (the document lists several secrets per provider, all accepted) "
        "by the runbook in docs/OPERATIONS.md."
    ),
}


PACK = "AwsSolutions"


def acknowledge(construct: IConstruct, rule: str, reason_key: str) -> None:
    """Acknowledge ``rule`` (e.g. ``AwsSolutions-SQS3``) on ``construct`` and everything below it."""
    Validations.of(construct).acknowledge(Acknowledgment(id=f"{PACK}::{rule}", reason=REASONS[reason_key]))


def xray_tracing(role: IConstruct) -> None:
    acknowledge(role, "AwsSolutions-IAM5[Resource::*]", "xray")


def python_runtime(function: IConstruct) -> None:
    acknowledge(function, "AwsSolutions-L1", "runtime")


def object_wildcards(role: IConstruct, statements: Sequence[iam.PolicyStatement]) -> None:
    """Acknowledge ``<bucket>/*`` resources of statements that only touch objects of one bucket."""
    stack = Stack.of(role)
    for statement in statements:
        if not statement.actions or not set(statement.actions) <= OBJECT_ACTIONS:
            continue
        for resource in statement.resources:
            rendered = nag_reference(stack.resolve(resource))
            if rendered.endswith("/*") and "*" not in rendered[:-2]:
                acknowledge(role, f"AwsSolutions-IAM5[Resource::{rendered}]", "objects")


def nag_reference(value: Any) -> str:
    """How cdk-nag spells a resolved CloudFormation value in a finding id (``<Logical.Arn>``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Fn::GetAtt":
            return f"<{argument[0]}.{argument[1]}>"
        if function == "Ref":
            return f"<{argument}>"
        if function == "Fn::Join":
            separator, parts = argument
            return str(separator).join(nag_reference(part) for part in parts)
    raise ValueError(f"cannot render {value!r} as a cdk-nag reference")
