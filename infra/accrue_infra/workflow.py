"""The payment workflow as a Step Functions state machine, rendered from ``PAYMENT_WORKFLOW``."""

from __future__ import annotations

import json

from aws_cdk import Aws, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from accrue.domain.payment_workflow import PAYMENT_WORKFLOW
from accrue_infra import acknowledgements as ack
from accrue_infra.settings import DeploymentSettings
from accrue_infra.workflow_asl import render_asl


def state_machine_name(settings: DeploymentSettings) -> str:
    return settings.name("payment-workflow")


def state_machine_arn(settings: DeploymentSettings) -> str:
    """Built from the name, so functions can hold it without depending on the state machine."""
    return f"arn:{Aws.PARTITION}:states:{Aws.REGION}:{Aws.ACCOUNT_ID}:stateMachine:{state_machine_name(settings)}"


class PaymentWorkflow(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: DeploymentSettings,
        steps_function: lambda_.IFunction,
        key: kms.IKey,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        self.definition = render_asl(PAYMENT_WORKFLOW)
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            # CloudWatch Logs resource policies for vended logs stay small under /aws/vendedlogs/.
            log_group_name=f"/aws/vendedlogs/states/{state_machine_name(settings)}",
            retention=log_retention,
            encryption_key=key,
            removal_policy=RemovalPolicy.DESTROY if settings.destroyable else RemovalPolicy.RETAIN,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=state_machine_name(settings),
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_string(json.dumps(self.definition, indent=2)),
            definition_substitutions={"WorkflowStepsFunctionArn": steps_function.function_arn},
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
            encryption_configuration=sfn.CustomerManagedEncryptionConfiguration(key),
            removal_policy=RemovalPolicy.DESTROY if settings.destroyable else RemovalPolicy.RETAIN,
        )
        self.state_machine.add_to_role_policy(
            iam.PolicyStatement(
                sid="InvokeWorkflowSteps",
                actions=["lambda:InvokeFunction"],
                resources=[steps_function.function_arn],
            )
        )
        role = self.state_machine.role
        ack.acknowledge(role, "AwsSolutions-IAM5[Resource::*]", "log-delivery")
