"""EventBridge Scheduler schedules, one per entry of ``accrue.domain.schedules.SCHEDULES``.

The local scheduler (``accrue serve``) reads the same tuple, so a schedule changes in one place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aws_cdk import Aws
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from accrue.domain.schedules import SCHEDULES, Schedule
from accrue_infra.settings import DeploymentSettings

# A scheduled run that cannot be delivered is retried for an hour, then goes to the DLQ.
MAX_RETRY_ATTEMPTS = 3
MAX_EVENT_AGE_SECONDS = 3600


class MissingScheduleTarget(ValueError):
    """A schedule in ``SCHEDULES`` has no function to run it."""


def target_input(schedule: Schedule) -> str:
    # The handlers learn which run this is (payouts key their idempotency on the month of it).
    return json.dumps(
        {
            "schedule": schedule.name,
            "scheduledTime": "<aws.scheduler.scheduled-time>",
            "executionId": "<aws.scheduler.execution-id>",
        }
    )


class Schedules(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: DeploymentSettings,
        targets: Mapping[str, lambda_.IFunction],
        dead_letter_queue: sqs.IQueue,
        key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id)
        missing = [schedule.name for schedule in SCHEDULES if schedule.name not in targets]
        if missing:
            raise MissingScheduleTarget(f"schedules without a target function: {missing}")

        self.group = scheduler.CfnScheduleGroup(self, "Group", name=settings.name("schedules"))
        self.role = iam.Role(
            self,
            "Role",
            role_name=settings.name("scheduler"),
            description="EventBridge Scheduler: invoke the scheduled functions, dead-letter undeliverable runs",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
            ),
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="InvokeScheduledFunctions",
                actions=["lambda:InvokeFunction"],
                resources=[targets[schedule.name].function_arn for schedule in SCHEDULES],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="DeadLetterUndeliverableRuns", actions=["sqs:SendMessage"], resources=[dead_letter_queue.queue_arn]
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="UseDataKey",
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=[key.key_arn],
            )
        )

        self.schedules: dict[str, scheduler.CfnSchedule] = {}
        for schedule in SCHEDULES:
            cfn = scheduler.CfnSchedule(
                self,
                f"Schedule-{schedule.name}",
                name=settings.name(schedule.name),
                group_name=self.group.name,
                description=schedule.description,
                schedule_expression=schedule.aws_expression,
                schedule_expression_timezone="UTC",
                flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
                state="ENABLED",
                kms_key_arn=key.key_arn,
                target=scheduler.CfnSchedule.TargetProperty(
                    arn=targets[schedule.name].function_arn,
                    role_arn=self.role.role_arn,
                    input=target_input(schedule),
                    retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(
                        maximum_retry_attempts=MAX_RETRY_ATTEMPTS,
                        maximum_event_age_in_seconds=MAX_EVENT_AGE_SECONDS,
                    ),
                    dead_letter_config=scheduler.CfnSchedule.DeadLetterConfigProperty(arn=dead_letter_queue.queue_arn),
                ),
            )
            cfn.node.add_dependency(self.group)
            # The role's policy must exist before the first run (the role itself is referenced).
            policy = self.role.node.try_find_child("DefaultPolicy")
            if policy is not None:
                cfn.node.add_dependency(policy)
            self.schedules[schedule.name] = cfn
