"""CloudWatch alarms (all to the SNS alarm topic) and one dashboard.

Thresholds (docs/OPERATIONS.md explains what to do for each):
- any unhandled function error (the application turns bad input into responses and partial batch
  failures, so a Lambda ``Errors`` datapoint is a crash or a timeout);
- any message in any dead-letter or failure queue (seed 004: depth > 0);
- the oldest message of a work queue older than 15 minutes (work is not keeping up);
- API 5xx above 10 in two consecutive 5-minute periods (seed 004);
- any DynamoDB read/write throttle event on the table or an index in 2 of 3 periods;
- any failed, timed-out or aborted payment workflow execution;
- the outbox stream more than 5 minutes behind (events are not leaving).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Aws, Duration
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from accrue_infra.function import AccrueFunction
from accrue_infra.settings import DeploymentSettings

FIVE_MINUTES = Duration.minutes(5)
QUEUE_AGE_THRESHOLD_SECONDS = 15 * 60
API_5XX_THRESHOLD = 10
STREAM_LAG_THRESHOLD_MS = 5 * 60 * 1000


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: DeploymentSettings,
        alarm_topic: sns.ITopic,
        functions: Sequence[AccrueFunction],
        work_queues: Mapping[str, sqs.IQueue],
        dead_letter_queues: Mapping[str, sqs.IQueue],
        api: apigw.RestApi,
        table: dynamodb.Table,
        index_names: Sequence[str],
        state_machine: sfn.StateMachine,
        stream_function: AccrueFunction,
    ) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        self._action = actions.SnsAction(alarm_topic)
        self.alarms: list[cloudwatch.Alarm] = []

        for function in functions:
            self._alarm(
                f"{function.spec.purpose}-errors",
                function.function.metric_errors(period=FIVE_MINUTES, statistic="Sum"),
                threshold=1,
                description=f"{function.function_name} failed (crash or timeout): see its log group",
            )
        for name, queue in dead_letter_queues.items():
            self._alarm(
                f"{name}-depth",
                queue.metric_approximate_number_of_messages_visible(period=Duration.minutes(1), statistic="Maximum"),
                threshold=1,
                description=f"Messages gave up and wait in {name}: inspect and redrive (docs/OPERATIONS.md)",
            )
        for name, queue in work_queues.items():
            self._alarm(
                f"{name}-age",
                queue.metric_approximate_age_of_oldest_message(period=FIVE_MINUTES, statistic="Maximum"),
                threshold=QUEUE_AGE_THRESHOLD_SECONDS,
                description=f"The oldest message of the {name} queue waits more than 15 minutes",
            )
        self._alarm(
            "api-5xx",
            api.metric_server_error(period=FIVE_MINUTES, statistic="Sum"),
            threshold=API_5XX_THRESHOLD + 1,
            evaluation_periods=2,
            description="The API answered more than 10 server errors in each of two 5-minute periods",
        )
        self._alarm(
            "table-throttles",
            self._throttle_events(table, index_names),
            threshold=1,
            evaluation_periods=3,
            datapoints_to_alarm=2,
            description="DynamoDB throttled reads or writes of the table or an index (hot partition?)",
        )
        self._alarm(
            "payment-workflow-failures",
            cloudwatch.MathExpression(
                expression="FILL(failed, 0) + FILL(timedout, 0) + FILL(aborted, 0)",
                using_metrics={
                    "failed": state_machine.metric_failed(period=FIVE_MINUTES, statistic="Sum"),
                    "timedout": state_machine.metric_timed_out(period=FIVE_MINUTES, statistic="Sum"),
                    "aborted": state_machine.metric_aborted(period=FIVE_MINUTES, statistic="Sum"),
                },
                label="Failed, timed-out and aborted executions",
                period=FIVE_MINUTES,
            ),
            threshold=1,
            description="A payment workflow execution ended outside its own failure path (infrastructure error)",
        )
        self._alarm(
            "stream-lag",
            stream_function.function.metric("IteratorAge", period=FIVE_MINUTES, statistic="Maximum"),
            threshold=STREAM_LAG_THRESHOLD_MS,
            description="Outbox events wait more than 5 minutes on the DynamoDB stream",
        )

        self.dashboard = self._dashboard(
            functions, work_queues, dead_letter_queues, api, table, index_names, state_machine
        )

    def _alarm(
        self,
        purpose: str,
        metric: cloudwatch.IMetric,
        *,
        threshold: float,
        description: str,
        evaluation_periods: int = 1,
        datapoints_to_alarm: int | None = None,
    ) -> None:
        alarm = cloudwatch.Alarm(
            self,
            f"Alarm-{purpose}",
            alarm_name=self._settings.name(purpose),
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=datapoints_to_alarm,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(self._action)
        alarm.add_ok_action(self._action)
        self.alarms.append(alarm)

    @staticmethod
    def _throttle_events(table: dynamodb.Table, index_names: Sequence[str]) -> cloudwatch.MathExpression:
        metrics: dict[str, cloudwatch.IMetric] = {}
        scopes: list[dict[str, str]] = [{"TableName": table.table_name}]
        scopes += [{"TableName": table.table_name, "GlobalSecondaryIndexName": name} for name in index_names]
        for number, dimensions in enumerate(scopes):
            for kind in ("Read", "Write"):
                metrics[f"{kind.lower()}{number}"] = cloudwatch.Metric(
                    namespace="AWS/DynamoDB",
                    metric_name=f"{kind}ThrottleEvents",
                    dimensions_map=dimensions,
                    period=FIVE_MINUTES,
                    statistic="Sum",
                )
        return cloudwatch.MathExpression(
            expression=" + ".join(f"FILL({name}, 0)" for name in metrics),
            using_metrics=metrics,
            label="Throttle events (table and indexes)",
            period=FIVE_MINUTES,
        )

    def _dashboard(
        self,
        functions: Sequence[AccrueFunction],
        work_queues: Mapping[str, sqs.IQueue],
        dead_letter_queues: Mapping[str, sqs.IQueue],
        api: apigw.RestApi,
        table: dynamodb.Table,
        index_names: Sequence[str],
        state_machine: sfn.StateMachine,
    ) -> cloudwatch.Dashboard:
        def per_function(metric: str, statistic: str) -> list[cloudwatch.IMetric]:
            return [
                f.function.metric(metric, period=FIVE_MINUTES, statistic=statistic, label=f.spec.purpose)
                for f in functions
            ]

        dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=self._settings.name("overview"))
        dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms), width=24, height=4)
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="API requests and errors",
                left=[api.metric_count(period=FIVE_MINUTES)],
                right=[api.metric_client_error(period=FIVE_MINUTES), api.metric_server_error(period=FIVE_MINUTES)],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="API latency (p50, p99)",
                left=[
                    api.metric_latency(period=FIVE_MINUTES, statistic="p50"),
                    api.metric_latency(period=FIVE_MINUTES, statistic="p99"),
                ],
                width=12,
            ),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Function invocations", left=per_function("Invocations", "Sum"), width=8),
            cloudwatch.GraphWidget(title="Function errors", left=per_function("Errors", "Sum"), width=8),
            cloudwatch.GraphWidget(title="Function duration (p99)", left=per_function("Duration", "p99"), width=8),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Work queues: waiting messages and oldest age",
                left=[
                    q.metric_approximate_number_of_messages_visible(period=FIVE_MINUTES) for q in work_queues.values()
                ],
                right=[q.metric_approximate_age_of_oldest_message(period=FIVE_MINUTES) for q in work_queues.values()],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Dead-letter and failure queues",
                left=[
                    q.metric_approximate_number_of_messages_visible(period=FIVE_MINUTES, statistic="Maximum")
                    for q in dead_letter_queues.values()
                ],
                width=12,
            ),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="DynamoDB consumed capacity",
                left=[
                    table.metric_consumed_read_capacity_units(period=FIVE_MINUTES),
                    table.metric_consumed_write_capacity_units(period=FIVE_MINUTES),
                ],
                right=[self._throttle_events(table, index_names)],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Payment workflow executions",
                left=[
                    state_machine.metric_started(period=FIVE_MINUTES),
                    state_machine.metric_succeeded(period=FIVE_MINUTES),
                    state_machine.metric_failed(period=FIVE_MINUTES),
                ],
                width=12,
            ),
        )
        return dashboard

    def dashboard_url(self) -> str:
        return (
            f"https://console.aws.amazon.com/cloudwatch/home?region={Aws.REGION}"
            f"#dashboards:name={self._settings.name('overview')}"
        )
