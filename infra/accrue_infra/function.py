"""The one way this app makes a Lambda function: function + its log group + its own role.

Every function is Python 3.12 on arm64 with X-Ray tracing, writes to a KMS-encrypted log group with
a fixed retention, and runs under a role that holds only the statements passed in (no managed
policies, nothing shared with another function).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from accrue_infra import acknowledgements as ack

RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURE = lambda_.Architecture.ARM_64


@dataclass(frozen=True)
class FunctionSpec:
    """What differs between functions; everything else is the same for all of them."""

    purpose: str  # the name: accrue-<purpose>-<env>
    handler: str  # dotted path; the module is only referenced, never imported by the CDK app
    description: str
    memory_mb: int = 256
    timeout: Duration = field(default_factory=lambda: Duration.seconds(30))
    # Only for singletons (scheduled jobs): the API and the queue workers scale with their sources.
    reserved_concurrency: int | None = None
    # For functions AWS invokes asynchronously (S3 notifications, EventBridge Scheduler): where an
    # event goes after Lambda's own retries are exhausted.
    async_dead_letter_queue: sqs.IQueue | None = None


class AccrueFunction(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        spec: FunctionSpec,
        name: str,
        code: lambda_.Code,
        environment: dict[str, str],
        key: kms.IKey,
        log_retention: logs.RetentionDays,
        removal_policy: RemovalPolicy,
        statements: list[iam.PolicyStatement],
    ) -> None:
        super().__init__(scope, construct_id)
        self.spec = spec
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/aws/lambda/{name}",
            retention=log_retention,
            encryption_key=key,
            removal_policy=removal_policy,
        )
        self.role = iam.Role(
            self,
            "Role",
            role_name=name,
            description=f"Execution role of {name} only",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteOwnLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        for statement in statements:
            self.role.add_to_policy(statement)
        dlq = spec.async_dead_letter_queue
        if dlq is not None and dlq.encryption_master_key is not None:
            # Lambda sends to the dead-letter queue with the function's role; the queue is encrypted.
            self.role.add_to_policy(
                iam.PolicyStatement(
                    sid="EncryptForDeadLetterQueue",
                    actions=["kms:GenerateDataKey", "kms:Decrypt"],
                    resources=[dlq.encryption_master_key.key_arn],
                )
            )
        self.function = lambda_.Function(
            self,
            "Function",
            function_name=name,
            description=spec.description,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=spec.handler,
            code=code,
            memory_size=spec.memory_mb,
            timeout=spec.timeout,
            environment=environment,
            role=self.role,
            log_group=self.log_group,
            tracing=lambda_.Tracing.ACTIVE,
            reserved_concurrent_executions=spec.reserved_concurrency,
            dead_letter_queue=dlq,
            # A handler that writes to the queue it consumes must not loop forever.
            recursive_loop=lambda_.RecursiveLoop.TERMINATE,
        )
        ack.xray_tracing(self.role)
        ack.object_wildcards(self.role, statements)
        ack.python_runtime(self.function)

    @property
    def function_arn(self) -> str:
        return self.function.function_arn

    @property
    def function_name(self) -> str:
        return self.function.function_name
